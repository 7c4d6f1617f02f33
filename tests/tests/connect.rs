//! CONNECT handling (MQTT 3.1.1 sections 3.1 and 3.2), end to end over real sockets: what the
//! first packet must be, protocol name and level, connect flags, client identifiers, the
//! CONNACK session-present flag and return codes, anonymous access, what happens to bytes that
//! follow a CONNECT, the connect timeout and a listener's `max-connections`.

use std::time::{Duration, Instant};

use amqtt_tests::raw::{encode, field, frame};
use amqtt_tests::*;
use bytes::Bytes;

/// A raw MQTT 3.1.1 CONNECT with the given connect flags, keep-alive 60 and `payload` (client
/// id and whatever the flags announce), for flag combinations the encoder would not produce.
fn raw_connect(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

fn connect_as(client_id: &str, clean_session: bool, name: &'static str, level: u8) -> Connect {
    Connect {
        protocol_name: ByteString::from_static(name),
        protocol_level: level,
        ..connect_packet(client_id, clean_session)
    }
}

/// Expects a CONNACK refusing with `code`, with session present 0 [MQTT-3.2.2-4], followed by
/// the close of the connection [MQTT-3.2.2-5].
async fn expect_refused(client: &mut TestClient, code: ConnectReturnCode) {
    match client.recv().await {
        Packet::ConnAck(connack) => {
            assert_eq!(connack.code, code, "CONNACK return code");
            assert!(!connack.session_present, "session present must be 0 with a non-zero return code [MQTT-3.2.2-4]");
        }
        other => panic!("expected CONNACK {code:?}, got {other:?}"),
    }
    client.expect_closed().await;
}

/// Expects a CONNACK accepting a connection with no stored session (return code 0, session
/// present 0).
async fn expect_accepted(client: &mut TestClient) {
    assert_eq!(
        client.recv().await,
        Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::Accepted })
    );
}

// ---------------------------------------------------------------------------------------------
// The first packet
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.1.0-1] a PUBLISH, SUBSCRIBE or PINGREQ before CONNECT closes the connection, and the
/// PUBLISH is not routed.
#[tokio::test]
async fn packet_before_connect_closes_the_connection() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("first/t", QoS::AtLeastOnce)]).await;
    let errors = broker.stats().protocol_errors;
    let before_connect: [Packet; 4] = [
        publish_packet("first/t", b"before connect", QoS::AtMostOnce, false, 0).into(),
        publish_packet("first/t", b"before connect", QoS::AtLeastOnce, false, 1).into(),
        Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter { filter: ByteString::from_static("#"), qos: QoS::AtMostOnce }],
        }
        .into(),
        Packet::PingReq,
    ];
    for (i, packet) in before_connect.into_iter().enumerate() {
        let mut client = TestClient::connect_raw(addr(&broker)).await;
        client.send(packet).await;
        client.expect_closed().await;
        assert_eq!(broker.stats().protocol_errors, errors + i as u64 + 1, "counted as a protocol error");
    }
    assert_nothing_before_marker(&mut publisher, &mut sub, "first/t").await;
    broker.stop();
}

/// [MQTT-3.1.0-2] a second CONNECT is a protocol violation: the connection is closed and what
/// follows it is not processed.
#[tokio::test]
async fn second_connect_closes_the_connection() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("second/t", QoS::AtLeastOnce)]).await;
    let (mut client, _) = TestClient::connect(addr(&broker), "twice", true).await;
    client.ping().await;
    let mut bytes = encode(connect_packet("twice", true));
    bytes.extend(encode(publish_packet("second/t", b"after second connect", QoS::AtMostOnce, false, 0)));
    client.send_bytes(&bytes).await;
    client.expect_closed().await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "second/t").await;
    broker.stop();
}

/// A connection that sends nothing is closed after `connect-timeout` (0.5 s here; the default
/// is 10 s), and not before.
#[tokio::test]
async fn silent_connection_closed_after_connect_timeout() {
    assert_eq!(Config::default().connect_timeout, Duration::from_secs(10), "documented default connect-timeout");
    let broker = start_broker_with("connect-timeout: 0.5\n");
    let start = Instant::now();
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    // Still open shortly before the deadline (the timer starts once the broker accepts, after
    // `start`).
    let early = Duration::from_millis(400).saturating_sub(start.elapsed());
    assert!(!client.closed_within(early).await, "closed before connect-timeout");
    assert!(client.closed_within(Duration::from_secs(5)).await, "still open long after connect-timeout");
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "closed after {elapsed:?}");
    // A client that connects in time is not affected by the timer.
    let (mut ok, _) = TestClient::connect(addr(&broker), "in-time", true).await;
    let start = Instant::now();
    assert!(!ok.closed_within(Duration::from_millis(800)).await, "an accepted client closed by connect-timeout");
    assert!(start.elapsed() >= Duration::from_millis(800));
    ok.ping().await;
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Protocol name and level
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.1.2-1] a protocol name other than "MQTT" is closed without CONNACK.
#[tokio::test]
async fn unknown_protocol_name_closes_without_connack() {
    let broker = start_broker();
    for name in ["MQTX", "mqtt", "HTTP"] {
        let mut client = TestClient::connect_raw(addr(&broker)).await;
        client.send(connect_as("proto-name", true, name, 4)).await;
        client.expect_closed().await;
    }
    broker.stop();
}

/// [MQTT-3.1.2-2] protocol level 3 or 5 with name "MQTT" gets CONNACK 0x01 (unacceptable
/// protocol version) and the connection is closed; so does the MQTT 3.1 name "MQIsdp" level 3.
#[tokio::test]
async fn unsupported_protocol_level_refused_with_0x01() {
    let broker = start_broker();
    for (name, level) in [("MQTT", 3), ("MQTT", 5), ("MQTT", 0), ("MQTT", 255), ("MQIsdp", 3)] {
        let mut client = TestClient::connect_raw(addr(&broker)).await;
        client.send(connect_as("proto-level", true, name, level)).await;
        expect_refused(&mut client, ConnectReturnCode::UnacceptableProtocolVersion).await;
    }
    broker.stop();
}

/// [MQTT-3.1.2-2] a genuine MQTT 5 CONNECT (with its properties, which do not parse as 3.1.1)
/// also gets CONNACK 0x01 and a close, so an MQTT 5 client learns to fall back.
#[tokio::test]
async fn mqtt5_connect_with_properties_refused_with_0x01() {
    let broker = start_broker();
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60]);
    // Properties: session expiry interval (0x11) = 0, receive maximum (0x21) = 20.
    body.extend_from_slice(&[8, 0x11, 0, 0, 0, 0, 0x21, 0, 20]);
    body.extend(field(b"mqtt5-client"));
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send_bytes(&frame(0x10, &body)).await;
    expect_refused(&mut client, ConnectReturnCode::UnacceptableProtocolVersion).await;
    // Without properties to speak of (property length 0) as well.
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
    body.extend(field(b"mqtt5-client"));
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send_bytes(&frame(0x10, &body)).await;
    expect_refused(&mut client, ConnectReturnCode::UnacceptableProtocolVersion).await;
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Connect flags
// ---------------------------------------------------------------------------------------------

async fn assert_flags_rejected(broker: &RunningBroker, flags: u8, payload: &[u8], what: &str) {
    let errors = broker.stats().protocol_errors;
    let mut client = TestClient::connect_raw(addr(broker)).await;
    client.send_bytes(&raw_connect(flags, payload)).await;
    client.expect_closed().await;
    assert_eq!(broker.stats().protocol_errors, errors + 1, "{what}: counted as a protocol error");
}

/// [MQTT-3.1.2-3] the reserved connect flag (bit 0) set: the connection is closed.
#[tokio::test]
async fn reserved_connect_flag_closes() {
    let broker = start_broker();
    assert_flags_rejected(&broker, 0x03, &field(b"reserved"), "reserved flag").await;
    // The same CONNECT without the reserved bit is accepted: the test can tell the difference.
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send_bytes(&raw_connect(0x02, &field(b"reserved"))).await;
    expect_accepted(&mut client).await;
    broker.stop();
}

/// [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15] will flag 0 with a will QoS or will retain:
/// closed.
#[tokio::test]
async fn will_qos_or_retain_without_will_flag_closes() {
    let broker = start_broker();
    assert_flags_rejected(&broker, 0x02 | 0x08, &field(b"w"), "will QoS 1 without will").await;
    assert_flags_rejected(&broker, 0x02 | 0x10, &field(b"w"), "will QoS 2 without will").await;
    assert_flags_rejected(&broker, 0x02 | 0x20, &field(b"w"), "will retain without will").await;
    broker.stop();
}

/// [MQTT-3.1.2-14] will QoS 3: closed.
#[tokio::test]
async fn will_qos_3_closes() {
    let broker = start_broker();
    let mut payload = field(b"w");
    payload.extend(field(b"will/topic"));
    payload.extend(field(b"gone"));
    assert_flags_rejected(&broker, 0x02 | 0x04 | 0x18, &payload, "will QoS 3").await;
    // Will QoS 2 with the same payload is fine.
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send_bytes(&raw_connect(0x02 | 0x04 | 0x10, &payload)).await;
    expect_accepted(&mut client).await;
    broker.stop();
}

/// [MQTT-3.1.2-22] password flag without user name flag: closed.
#[tokio::test]
async fn password_without_username_closes() {
    let broker = start_broker();
    let mut payload = field(b"pw");
    payload.extend(field(b"secret"));
    assert_flags_rejected(&broker, 0x02 | 0x40, &payload, "password without user name").await;
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Client identifiers
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.1.3-8] an empty client id with clean session 0 gets CONNACK 0x02 (identifier
/// rejected), session present 0 [MQTT-3.2.2-4], and the connection is closed.
#[tokio::test]
async fn empty_client_id_with_clean_session_0_rejected() {
    let broker = start_broker();
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send(connect_packet("", false)).await;
    expect_refused(&mut client, ConnectReturnCode::IdentifierRejected).await;
    broker.stop();
}

/// [MQTT-3.1.3-6] [MQTT-3.1.3-7] an empty client id with clean session 1 is accepted with a
/// generated id and works; two such clients get distinct ids, so neither takes the other over.
#[tokio::test]
async fn empty_client_id_with_clean_session_1_accepted() {
    let broker = start_broker();
    let (mut first, present) = TestClient::connect(addr(&broker), "", true).await;
    assert!(!present, "session present 0 with clean session 1 [MQTT-3.2.2-1]");
    assert_eq!(
        first.subscribe(&[("anon/#", QoS::AtLeastOnce)]).await,
        vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)]
    );
    first.publish("anon/self", b"to myself", QoS::AtLeastOnce, false).await;
    let got = first.recv_publish().await;
    assert_eq!((got.topic.as_ref() as &str, got.payload.as_ref()), ("anon/self", b"to myself".as_ref()));
    first.ack(&got).await;

    let (mut second, present) = TestClient::connect(addr(&broker), "", true).await;
    assert!(!present);
    // Both are still connected: the second did not take over the first's session.
    round_trip(&mut second, &mut first, "anon/x", b"from second").await;
    first.ping().await;
    second.ping().await;
    assert_eq!(broker.stats().clients_connected, 2);
    first.disconnect().await;
    second.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.3-5] client ids longer than 23 characters and with any UTF-8 characters are
/// accepted (the server MAY allow them; this one does).
#[tokio::test]
async fn long_and_unicode_client_ids_accepted() {
    let broker = start_broker();
    let long = "x".repeat(1000);
    let longest = "y".repeat(MAX_FIELD_LEN);
    for id in [
        "abcdefghijklmnopqrstuvwxyz0123456789",
        long.as_str(),
        longest.as_str(),
        "client/with+wild#chars and spaces",
        "клиент-客户端-😀-ü",
        "\u{7f}\u{ffff}",
    ] {
        let (mut client, present) = TestClient::connect(addr(&broker), id, true).await;
        assert!(!present);
        client.ping().await;
        client.disconnect().await;
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// CONNACK
// ---------------------------------------------------------------------------------------------

/// Session present: [MQTT-3.2.2-1] 0 with clean session 1; [MQTT-3.2.2-3] 0 for a new
/// clean-session-0 client; [MQTT-3.2.2-2] 1 when it comes back with clean session 0; 0 when it
/// comes back with clean session 1 (the session is discarded), and so 0 again after that. The
/// return code is 0 each time.
#[tokio::test]
async fn connack_session_present() {
    let broker = start_broker();
    let a = addr(&broker);
    let (client, present) = TestClient::connect(a, "sp-clean", true).await;
    assert!(!present, "[MQTT-3.2.2-1] clean session 1");
    client.disconnect().await;

    let (client, present) = TestClient::connect(a, "sp", false).await;
    assert!(!present, "[MQTT-3.2.2-3] no stored session yet");
    client.disconnect().await;
    let (client, present) = TestClient::connect(a, "sp", false).await;
    assert!(present, "[MQTT-3.2.2-2] stored session resumed");
    client.disconnect().await;
    let (client, present) = TestClient::connect(a, "sp", true).await;
    assert!(!present, "[MQTT-3.2.2-1] clean session 1 discards the stored session");
    client.disconnect().await;
    let (client, present) = TestClient::connect(a, "sp", false).await;
    assert!(!present, "[MQTT-3.2.2-3] the session was discarded by the clean-session-1 connection");
    client.disconnect().await;
    let (client, present) = TestClient::connect(a, "sp", false).await;
    assert!(present, "[MQTT-3.2.2-2]");
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-3.2.2-2] session present is also 1 when the clean-session-0 client comes back while
/// its previous connection is still open (takeover).
#[tokio::test]
async fn connack_session_present_on_takeover() {
    let broker = start_broker();
    let (mut old, present) = TestClient::connect(addr(&broker), "sp-takeover", false).await;
    assert!(!present);
    let (mut new, present) = TestClient::connect(addr(&broker), "sp-takeover", false).await;
    assert!(present);
    old.expect_closed().await;
    new.ping().await;
    broker.stop();
}

/// `auth` that lets in only user `u` with password `secret` (a sha512-crypt hash made with
/// `openssl passwd -6`), from a password file that lives as long as the returned handle.
fn only_user_u() -> (tempfile::NamedTempFile, String) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let hash = "$6$s4ltS4lt$9uHOi55laf.sEEL.nTAfniTJjMMs7SDbYU5h7LVlO0kOSmOWxbm5Xz5q3kpep0HjBmO3KiwhbIAtD0zuw5Z8w0";
    std::fs::write(file.path(), format!("u:{hash}\n")).expect("write the password file");
    let yaml = format!("auth:\n  allow-anonymous: false\n  password-file: {}\n", file.path().display());
    (file, yaml)
}

fn credentials(connect: Connect, username: &'static str, password: &'static [u8]) -> Connect {
    Connect {
        username: Some(ByteString::from_static(username)),
        password: Some(Bytes::from_static(password)),
        ..connect
    }
}

/// `auth: {allow-anonymous: false}`: a CONNECT without a user name gets CONNACK 0x05 (not
/// authorized) with session present 0 [MQTT-3.2.2-4] and is closed [MQTT-3.2.2-5]; so does a
/// user name that no plugin vouches for (aMQTT would let it in: see the README); a user of the
/// password file with the right password is accepted.
#[tokio::test]
async fn anonymous_refused_when_not_allowed() {
    let (_passwd, auth) = only_user_u();
    let broker = start_broker_with(&auth);
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send(connect_packet("anon", false)).await;
    expect_refused(&mut client, ConnectReturnCode::NotAuthorized).await;

    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send(Connect { username: Some(ByteString::from_static("alice")), ..connect_packet("named", true) }).await;
    expect_refused(&mut client, ConnectReturnCode::NotAuthorized).await;

    let (mut client, connack) =
        TestClient::connect_with(addr(&broker), credentials(connect_packet("named", true), "u", b"secret")).await;
    assert_eq!(connack, ConnAck { session_present: false, code: ConnectReturnCode::Accepted });
    client.ping().await;
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// What follows a CONNECT
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.1.4-5] after a refused CONNECT the broker processes nothing sent after it: a PUBLISH
/// in the same write as the CONNECT is not routed, for each kind of refusal.
#[tokio::test]
async fn nothing_processed_after_a_refused_connect() {
    let (_passwd, auth) = only_user_u();
    let broker = start_broker_with(&auth);
    let a = addr(&broker);
    let user = |connect: Connect| credentials(connect, "u", b"secret");
    let (mut sub, _) = TestClient::connect_with(a, user(connect_packet("refused-sub", true))).await;
    assert_eq!(
        sub.subscribe(&[("refused/#", QoS::AtLeastOnce)]).await,
        vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)]
    );
    let (mut publisher, _) = TestClient::connect_with(a, user(connect_packet("refused-pub", true))).await;

    let refusals = [
        (user(connect_as("refused-1", true, "MQTT", 3)), ConnectReturnCode::UnacceptableProtocolVersion),
        (user(connect_packet("", false)), ConnectReturnCode::IdentifierRejected),
        (connect_packet("refused-5", true), ConnectReturnCode::NotAuthorized),
    ];
    for (connect, code) in refusals {
        let mut bytes = encode(connect);
        bytes.extend(encode(publish_packet("refused/t", b"after refusal", QoS::AtMostOnce, false, 0)));
        bytes.extend(encode(publish_packet("refused/t", b"after refusal", QoS::AtLeastOnce, true, 7)));
        bytes.extend(encode(Subscribe {
            pkid: 8,
            filters: vec![SubscribeFilter { filter: ByteString::from_static("#"), qos: QoS::AtMostOnce }],
        }));
        bytes.extend(encode(Packet::PingReq));
        let mut client = TestClient::connect_raw(a).await;
        client.send_bytes(&bytes).await;
        // expect_refused fails on any packet after the CONNACK (a PUBACK, SUBACK or PINGRESP).
        expect_refused(&mut client, code).await;
        assert_nothing_before_marker(&mut publisher, &mut sub, "refused/t").await;
    }
    assert_eq!(broker.stats().retained_messages, 0, "the retained PUBLISH after a refusal was stored");
    broker.stop();
}

/// Packets sent in the same write as the CONNECT are all processed, in order, after the
/// CONNACK: CONNECT + SUBSCRIBE + PUBLISH (to the topic just subscribed) + PINGREQ give the
/// CONNACK first, then a SUBACK, a PUBACK, a PINGRESP and the client's own message, which proves
/// the SUBSCRIBE was applied before the PUBLISH was routed. (The SUBACK and the PUBACK wait for
/// the router, so they may come after the PINGRESP: MQTT 3.1.1 orders only PUBLISH flows.)
#[tokio::test]
async fn packets_in_the_connect_write_processed_in_order() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "burst-pub", true).await;
    let mut bytes = encode(connect_packet("burst", false));
    bytes.extend(encode(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter { filter: ByteString::from_static("burst/#"), qos: QoS::AtLeastOnce }],
    }));
    bytes.extend(encode(publish_packet("burst/self", b"own", QoS::AtLeastOnce, false, 2)));
    bytes.extend(encode(Packet::PingReq));
    let mut client = TestClient::connect_raw(addr(&broker)).await;
    client.send_bytes(&bytes).await;
    expect_accepted(&mut client).await;
    let mut got = Vec::new();
    let mut own = None;
    while got.len() < 4 {
        match client.recv().await {
            Packet::Publish(publish) => {
                got.push("PUBLISH");
                own = Some(publish);
            }
            Packet::SubAck(suback) => {
                assert_eq!(
                    suback,
                    SubAck { pkid: 1, return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)] }
                );
                got.push("SUBACK");
            }
            Packet::PubAck(PubAck { pkid }) => {
                assert_eq!(pkid, 2);
                got.push("PUBACK");
            }
            Packet::PingResp => got.push("PINGRESP"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let position = |name: &str| got.iter().position(|&n| n == name).unwrap_or_else(|| panic!("no {name} in {got:?}"));
    // PUBACK goes out once the message is routed, so PINGRESP may overtake it: MQTT orders the
    // acknowledgements of PUBLISH packets among themselves, not against other answers.
    position("PINGRESP");
    assert!(position("SUBACK") < position("PUBLISH"), "delivery before SUBACK: {got:?}");
    let own = own.expect("own message delivered: the SUBSCRIBE was applied before the PUBLISH");
    assert_eq!((own.topic.as_ref() as &str, own.payload.as_ref()), ("burst/self", b"own".as_ref()));
    client.ack(&own).await;
    round_trip(&mut publisher, &mut client, "burst/a", b"subscribed in the connect write").await;
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// max-connections
// ---------------------------------------------------------------------------------------------

/// `max-connections: 2`: a third connection is closed at once without CONNACK and counted in
/// `connections_refused`; the two open ones keep working; once one of them has gone a new
/// connection is accepted.
#[tokio::test]
async fn max_connections_refuses_extra_connections() {
    let broker =
        start_broker_with("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n    max-connections: 2\n");
    let a = addr(&broker);
    let (mut one, _) = TestClient::connect(a, "one", true).await;
    let (mut two, _) = TestClient::connect(a, "two", true).await;
    assert_eq!(
        two.subscribe(&[("max/#", QoS::AtLeastOnce)]).await,
        vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)]
    );

    for attempt in 1..=2u64 {
        let mut third = TestClient::connect_raw(a).await;
        third.send(connect_packet("three", true)).await;
        third.expect_closed().await;
        assert_eq!(broker.stats().connections_refused, attempt, "refused connection counted");
    }
    assert_eq!(broker.stats().clients_connected, 2);
    round_trip(&mut one, &mut two, "max/a", b"still working").await;

    one.disconnect().await;
    // The slot is given back asynchronously: retry for a bounded time.
    let deadline = Instant::now() + WAIT;
    let (mut four, connack) = loop {
        if let Some(accepted) = LenientClient::try_connect(a, connect_packet("four", true)).await {
            break accepted;
        }
        assert!(Instant::now() < deadline, "no connection accepted within {WAIT:?} after one of two closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(connack, ConnAck { session_present: false, code: ConnectReturnCode::Accepted });
    four.send(Packet::PingReq).await;
    assert_eq!(four.recv_or_closed().await, Some(Packet::PingResp));
    // And the listener is full again.
    let mut fifth = TestClient::connect_raw(a).await;
    fifth.send(connect_packet("five", true)).await;
    fifth.expect_closed().await;
    two.ping().await;
    broker.stop();
}
