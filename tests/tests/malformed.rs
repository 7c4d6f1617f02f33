//! Malformed input (MQTT 3.1.1 sections 1.5, 2, 3 and 4.8): the offending connection is closed,
//! the broker counts a protocol error, and another connected client keeps receiving normally
//! before and after.

use std::net::SocketAddr;

use amqtt_tests::raw::{encode, field, frame};
use amqtt_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The concatenation of `parts`, to write a packet body as its fields.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A QoS 0 PUBLISH with a raw topic field.
fn publish_raw_topic(topic: &[u8]) -> Vec<u8> {
    frame(0x30, &cat(&[&field(topic), b"payload"]))
}

/// A SUBSCRIBE with packet id 1 and one raw filter with the given requested-QoS byte.
fn subscribe_raw(filter: &[u8], options: u8) -> Vec<u8> {
    frame(0x82, &cat(&[&[0, 1], &field(filter), &[options]]))
}

/// Connects a fresh client, sends `bytes` after its CONNECT was accepted, and asserts the
/// broker closes that connection (with nothing sent first), counts one protocol error, and
/// still serves the bystanders.
async fn assert_closes(bystanders: &mut Bystanders, what: &str, bytes: &[u8]) {
    let errors = bystanders.stats().protocol_errors;
    let (mut bad, _) = TestClient::connect(bystanders.addr(), "offender", true).await;
    bad.send_bytes(bytes).await;
    bad.expect_closed().await;
    assert_eq!(bystanders.stats().protocol_errors, errors + 1, "{what}: protocol error not counted");
    bystanders.still_served().await;
    assert_eq!(bystanders.stats().clients_connected, 2, "{what}: bystanders still connected");
}

/// Runs `cases` against one broker, each on its own connection.
async fn assert_all_close(yaml: &str, cases: &[(&str, Vec<u8>)]) {
    let mut bystanders = Bystanders::start(yaml).await;
    for (what, bytes) in cases {
        assert_closes(&mut bystanders, what, bytes).await;
    }
    bystanders.stop();
}

/// [MQTT-2.2.2-1] [MQTT-2.2.2-2] reserved fixed-header flags other than table 2.2's close the
/// connection.
#[tokio::test]
async fn reserved_fixed_header_flags() {
    assert_all_close(
        "",
        &[
            ("PUBREL flags 0", vec![0x60, 0x02, 0x00, 0x01]),
            ("PUBREL flags 3", vec![0x63, 0x02, 0x00, 0x01]),
            ("SUBSCRIBE flags 0", frame(0x80, &cat(&[&[0, 1], &field(b"a"), &[0]]))),
            ("UNSUBSCRIBE flags 0", frame(0xA0, &cat(&[&[0, 1], &field(b"a")]))),
            ("PINGREQ flags 1", vec![0xC1, 0x00]),
            ("PUBACK flags 2", vec![0x42, 0x02, 0x00, 0x01]),
            ("DISCONNECT flags 8", vec![0xE8, 0x00]),
        ],
    )
    .await;
}

/// [MQTT-2.2.3] a remaining length with a fifth byte closes the connection.
#[tokio::test]
async fn remaining_length_with_a_fifth_byte() {
    // Continuation bits on four bytes of value 0, so the size limit does not trigger first.
    assert_all_close("", &[("5-byte remaining length", vec![0x30, 0x80, 0x80, 0x80, 0x80, 0x01])]).await;
}

/// [MQTT-1.5.3-1] invalid UTF-8 and [MQTT-1.5.3-2] U+0000 in a topic close the connection.
#[tokio::test]
async fn invalid_strings_in_topics() {
    assert_all_close(
        "",
        &[
            ("invalid UTF-8 in PUBLISH topic", publish_raw_topic(&[b'o', b'k', b'/', 0xC3, 0x28])),
            ("UTF-16 surrogate in PUBLISH topic", publish_raw_topic(&[b'o', b'k', b'/', 0xED, 0xA0, 0x80])),
            ("overlong encoding in PUBLISH topic", publish_raw_topic(&[b'o', b'k', b'/', 0xC0, 0xAF])),
            ("U+0000 in PUBLISH topic", publish_raw_topic(b"ok/\0t")),
            ("invalid UTF-8 in SUBSCRIBE filter", subscribe_raw(&[b'o', b'k', b'/', 0xFF], 0)),
            ("U+0000 in SUBSCRIBE filter", subscribe_raw(b"ok/\0", 0)),
            ("U+0000 in UNSUBSCRIBE filter", frame(0xA2, &cat(&[&[0, 1], &field(b"ok/\0")]))),
        ],
    )
    .await;
}

/// [MQTT-3.3.2-2] a wildcard in a PUBLISH topic name closes the connection, and the message is
/// not delivered to a subscriber whose filter would match it.
#[tokio::test]
async fn wildcard_in_publish_topic() {
    assert_all_close(
        "",
        &[
            ("`+` in PUBLISH topic", publish_raw_topic(b"ok/+")),
            ("`#` in PUBLISH topic", publish_raw_topic(b"ok/#")),
            ("`#` alone as PUBLISH topic", publish_raw_topic(b"#")),
            ("`+` inside a level of a QoS 1 PUBLISH topic", frame(0x32, &cat(&[&field(b"ok/a+b"), &[0, 1], b"x"]))),
        ],
    )
    .await;
}

/// [MQTT-4.7.1-1] [MQTT-4.7.1-2] misplaced `#` or `+` in a SUBSCRIBE filter closes the
/// connection; [MQTT-4.7.3-1] so does an empty filter.
#[tokio::test]
async fn misplaced_wildcards_in_subscribe_filter() {
    assert_all_close(
        "",
        &[
            ("`#` not last", subscribe_raw(b"ok/#/a", 0)),
            ("`#` inside a level", subscribe_raw(b"ok/a#", 0)),
            ("`+` inside a level", subscribe_raw(b"ok/a+", 0)),
            ("`+` with text after it", subscribe_raw(b"+a/ok", 0)),
            ("empty filter", subscribe_raw(b"", 0)),
            ("bad second filter", frame(0x82, &cat(&[&[0, 1], &field(b"ok/a"), &[0], &field(b"##"), &[0]]))),
            ("`#` not last in UNSUBSCRIBE", frame(0xA2, &cat(&[&[0, 1], &field(b"ok/#/a")]))),
        ],
    )
    .await;
}

/// [MQTT-2.3.1-1] packet identifier 0 in a QoS 1/2 PUBLISH, SUBSCRIBE or UNSUBSCRIBE closes the
/// connection.
#[tokio::test]
async fn packet_id_zero() {
    assert_all_close(
        "",
        &[
            ("QoS 1 PUBLISH with packet id 0", frame(0x32, &cat(&[&field(b"ok/t"), &[0, 0], b"x"]))),
            ("QoS 2 PUBLISH with packet id 0", frame(0x34, &cat(&[&field(b"ok/t"), &[0, 0], b"x"]))),
            ("SUBSCRIBE with packet id 0", frame(0x82, &cat(&[&[0, 0], &field(b"ok/a"), &[0]]))),
            ("UNSUBSCRIBE with packet id 0", frame(0xA2, &cat(&[&[0, 0], &field(b"ok/a")]))),
        ],
    )
    .await;
}

/// [MQTT-3.8.3-3] SUBSCRIBE and [MQTT-3.10.3-2] UNSUBSCRIBE without any filter close the
/// connection.
#[tokio::test]
async fn subscribe_and_unsubscribe_without_filters() {
    assert_all_close(
        "",
        &[
            ("SUBSCRIBE with no filter", vec![0x82, 0x02, 0x00, 0x01]),
            ("UNSUBSCRIBE with no filter", vec![0xA2, 0x02, 0x00, 0x01]),
        ],
    )
    .await;
}

/// [MQTT-3.8.3-4] a SUBSCRIBE requested QoS of 3 or with reserved bits set closes the
/// connection.
#[tokio::test]
async fn subscribe_requested_qos_invalid() {
    assert_all_close(
        "",
        &[
            ("requested QoS 3", subscribe_raw(b"ok/a", 3)),
            ("reserved bit 2", subscribe_raw(b"ok/a", 0x04)),
            ("reserved bit 7 with QoS 1", subscribe_raw(b"ok/a", 0x81)),
            ("filter without a requested QoS byte", frame(0x82, &cat(&[&[0, 1], &field(b"ok/a")]))),
        ],
    )
    .await;
}

/// [MQTT-3.3.1-4] a PUBLISH with both QoS bits set closes the connection.
#[tokio::test]
async fn publish_qos_3() {
    assert_all_close(
        "",
        &[
            ("PUBLISH QoS 3", frame(0x36, &cat(&[&field(b"ok/t"), &[0, 1], b"x"]))),
            ("PUBLISH QoS 3 with DUP and RETAIN", frame(0x3F, &cat(&[&field(b"ok/t"), &[0, 1], b"x"]))),
        ],
    )
    .await;
}

/// [MQTT-4.8.0-1] a string whose length prefix runs past the end of the packet, or a packet
/// shorter than its fields, closes the connection.
#[tokio::test]
async fn string_longer_than_the_packet() {
    assert_all_close(
        "",
        &[
            ("PUBLISH topic length past the end", vec![0x30, 0x04, 0x00, 0x10, b'o', b'k']),
            ("SUBSCRIBE filter length past the end", vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x40, b'o', b'k']),
            ("UNSUBSCRIBE filter length past the end", vec![0xA2, 0x05, 0x00, 0x01, 0x00, 0x09, b'o']),
            ("QoS 1 PUBLISH without room for the packet id", frame(0x32, &field(b"ok/t"))),
            ("PUBACK too short", vec![0x40, 0x01, 0x01]),
            ("PINGREQ with a body", vec![0xC0, 0x01, 0x00]),
        ],
    )
    .await;
}

/// [MQTT-2.2.1] packet types 0 and 15 are reserved: closed. So is a server-to-client packet
/// sent by a client.
#[tokio::test]
async fn reserved_packet_types() {
    assert_all_close(
        "",
        &[
            ("packet type 0", vec![0x00, 0x00]),
            ("packet type 15", vec![0xF0, 0x00]),
            ("CONNACK from a client", vec![0x20, 0x02, 0x00, 0x00]),
            ("PINGRESP from a client", vec![0xD0, 0x00]),
        ],
    )
    .await;
}

/// A packet larger than `max-packet-size` (1024 here) is refused from its fixed header: a
/// 10 000-byte PUBLISH whose header alone is sent closes the connection without the body being
/// needed; a PUBLISH within the limit still goes through.
#[tokio::test]
async fn packet_larger_than_max_packet_size() {
    let mut bystanders = Bystanders::start("max-packet-size: 1024\n").await;
    // 10 000 = 0x10 | 0x80, 0x4E.
    assert_closes(&mut bystanders, "10 000-byte PUBLISH header", &[0x30, 0x90, 0x4E]).await;
    // A packet of exactly 1024 bytes is within the limit.
    let topic = b"ok/big";
    let payload = vec![b'p'; 1024 - 3 - 2 - topic.len()];
    let packet = frame(0x30, &cat(&[&field(topic), &payload]));
    assert_eq!(packet.len(), 1024);
    bystanders.publisher.send_bytes(&packet).await;
    let got = bystanders.sub.recv_publish().await;
    assert_eq!(got.payload.len(), payload.len());
    // One byte more is refused.
    let packet = frame(0x30, &cat(&[&field(topic), &payload, b"!"]));
    assert_closes(&mut bystanders, "1025-byte PUBLISH", &packet).await;
    bystanders.stop();
}

/// Opens a connection with a raw socket and completes the CONNECT.
async fn raw_connected(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&encode(connect_packet(client_id, true))).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut connack)).await.expect("no CONNACK").unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    stream
}

/// Reads until the broker closes the connection; fails on a timeout.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await {
        Ok(Ok(_)) | Ok(Err(_)) => got,
        Err(_) => panic!("connection still open after {WAIT:?}"),
    }
}

/// A truncated packet followed by EOF does not crash anything: the broker closes its side,
/// and the others go on.
#[tokio::test]
async fn truncated_packet_then_eof() {
    let mut bystanders = Bystanders::start("").await;
    let truncated: [&[u8]; 4] = [
        &[0x30],                                     // first byte only
        &[0x30, 0x90],                               // remaining length cut short
        &[0x32, 0x0A, 0x00, 0x04, b'o', b'k'],       // body cut short
        &[0x82, 0x09, 0x00, 0x01, 0x00, 0x04, b'o'], // SUBSCRIBE cut short
    ];
    for bytes in truncated {
        let mut stream = raw_connected(bystanders.addr(), "truncated").await;
        stream.write_all(bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(read_until_closed(&mut stream).await, b"", "nothing expected after a truncated packet");
        bystanders.still_served().await;
    }
    // Before CONNECT as well.
    let mut stream = TcpStream::connect(bystanders.addr()).await.unwrap();
    stream.write_all(&encode(connect_packet("cut", true))[..5]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    bystanders.still_served().await;
    bystanders.stop();
}

/// A fixed pseudo-random byte sequence (xorshift64*), the same on every run.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// [MQTT-4.8.0-1] garbage bytes close the connection, whether they come after an accepted
/// CONNECT or instead of one [MQTT-3.1.0-1], and the broker keeps serving the others.
/// `max-packet-size: 1024` so that whatever length the garbage announces, the broker has seen a
/// whole packet (or a refusable header) within the bytes sent.
#[tokio::test]
async fn garbage_closes_the_connection() {
    let mut bystanders = Bystanders::start("max-packet-size: 1024\n").await;
    for seed in 1..=16u64 {
        let bytes = garbage(seed, 2048);
        assert_closes(&mut bystanders, &format!("garbage seed {seed} after CONNECT"), &bytes).await;

        let errors = bystanders.stats().protocol_errors;
        let mut raw = TestClient::connect_raw(bystanders.addr()).await;
        raw.send_bytes(&bytes).await;
        raw.expect_closed().await;
        assert_eq!(bystanders.stats().protocol_errors, errors + 1, "garbage seed {seed} instead of CONNECT");
        bystanders.still_served().await;
    }
    bystanders.stop();
}
