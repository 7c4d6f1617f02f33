//! Property tests: every packet type round-trips through `Packet::write` → `frame_len` →
//! `Packet::read` and through `MqttCodec` fed in arbitrary chunks; arbitrary bytes never panic
//! the decoder, and whatever decodes re-encodes to the same packet.

use amqtt_protocol::{
    frame_len, ByteString, ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill, MqttCodec, Packet, PubAck,
    PubComp, PubRec, PubRel, Publish, QoS, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode, UnsubAck,
    Unsubscribe,
};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

#[path = "support/remaining_length.rs"]
mod remaining_length;
use remaining_length::remaining_length;

// ---- field strategies -------------------------------------------------------------------------

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Any UTF-8 string without U+0000.
fn string() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,12}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// One topic level without separators or wildcards (may be empty, may start with `$`).
fn level() -> impl Strategy<Value = String> {
    "[^/+#\u{0}]{0,6}"
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("topic names are not empty", |t| !t.is_empty())
        .prop_map(ByteString::from)
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (vec(filter_level, 0..5), any::<bool>())
        .prop_map(|(mut levels, multi)| {
            if multi {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("topic filters are not empty", |f| !f.is_empty())
        .prop_map(ByteString::from)
}

// ---- packet strategies ------------------------------------------------------------------------

fn last_will() -> impl Strategy<Value = LastWill> {
    (topic_name(), binary(), qos(), any::<bool>()).prop_map(|(topic, message, qos, retain)| LastWill {
        topic,
        message,
        qos,
        retain,
    })
}

fn connect() -> impl Strategy<Value = Packet> {
    (
        prop_oneof![Just(ByteString::from_static("MQTT")), string()],
        prop_oneof![Just(4u8), any::<u8>()],
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(last_will()),
        // A password only comes with a user name [MQTT-3.1.2-22].
        option::of((string(), option::of(binary()))),
    )
        .prop_map(|(protocol_name, protocol_level, clean_session, keep_alive, client_id, will, login)| {
            let (username, password) = match login {
                Some((user, password)) => (Some(user), password),
                None => (None, None),
            };
            Packet::Connect(Connect {
                protocol_name,
                protocol_level,
                clean_session,
                keep_alive,
                client_id,
                will,
                username,
                password,
            })
        })
}

fn connack() -> impl Strategy<Value = Packet> {
    (any::<bool>(), 0..=5u8).prop_map(|(session_present, code)| {
        let code = ConnectReturnCode::from_u8(code).unwrap_or(ConnectReturnCode::Accepted);
        Packet::ConnAck(ConnAck { session_present: session_present && code == ConnectReturnCode::Accepted, code })
    })
}

fn publish() -> impl Strategy<Value = Packet> {
    (qos(), any::<bool>(), any::<bool>(), topic_name(), pkid(), binary()).prop_map(
        |(qos, dup, retain, topic, pkid, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                pkid: if qos0 { 0 } else { pkid },
                payload,
            })
        },
    )
}

fn subscribe() -> impl Strategy<Value = Packet> {
    let filter = (topic_filter(), qos()).prop_map(|(filter, qos)| SubscribeFilter { filter, qos });
    (pkid(), vec(filter, 1..6)).prop_map(|(pkid, filters)| Packet::Subscribe(Subscribe { pkid, filters }))
}

fn suback() -> impl Strategy<Value = Packet> {
    let code = prop_oneof![qos().prop_map(SubscribeReturnCode::Success), Just(SubscribeReturnCode::Failure)];
    (pkid(), vec(code, 1..10)).prop_map(|(pkid, return_codes)| Packet::SubAck(SubAck { pkid, return_codes }))
}

fn unsubscribe() -> impl Strategy<Value = Packet> {
    (pkid(), vec(topic_filter(), 1..6)).prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters }))
}

/// Every one of the 14 packet types, with valid field values only.
fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect(),
        connack(),
        publish(),
        pkid().prop_map(|pkid| Packet::PubAck(PubAck { pkid })),
        pkid().prop_map(|pkid| Packet::PubRec(PubRec { pkid })),
        pkid().prop_map(|pkid| Packet::PubRel(PubRel { pkid })),
        pkid().prop_map(|pkid| Packet::PubComp(PubComp { pkid })),
        subscribe(),
        suback(),
        unsubscribe(),
        pkid().prop_map(|pkid| Packet::UnsubAck(UnsubAck { pkid })),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

// ---- helpers ----------------------------------------------------------------------------------

fn encode(packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.write(&mut buf).expect("valid packets encode");
    buf
}

/// A frame with a valid packet type, mostly valid flags and a short arbitrary body whose length
/// matches the header: random input that gets past the framing, so the packet readers are
/// exercised, and often enough decodes.
fn framed_noise() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![vec(any::<u8>(), 0..6), vec(any::<u8>(), 0..64)];
    (1..=14u8, any::<bool>(), 0..16u8, body).prop_map(|(ty, valid_flags, flags, body)| {
        let flags = match (valid_flags, ty) {
            (true, 3) => flags & 0b0111, // PUBLISH: any QoS and retain, no DUP
            (true, 6 | 8 | 10) => 0b0010,
            (true, _) => 0,
            (false, _) => flags,
        };
        let mut frame = vec![(ty << 4) | flags];
        frame.extend(remaining_length(body.len()));
        frame.extend(body);
        frame
    })
}

/// Length of the body of an encoded frame, from its fixed header.
fn frame_body_len(frame: &[u8]) -> usize {
    amqtt_protocol::FixedHeader::read(frame, usize::MAX).ok().flatten().map_or(0, |header| header.remaining_length)
}

/// Decodes everything `codec` can from `buf`; stops at the first error.
fn decode_all(codec: &mut MqttCodec, buf: &mut BytesMut) -> Result<Vec<Packet>, DecodeError> {
    let mut out = Vec::new();
    while let Some(packet) = codec.decode(buf)? {
        out.push(packet);
    }
    Ok(out)
}

/// Whatever decodes must re-encode, and decode again to the same packet.
fn assert_reencodes(packet: &Packet) {
    let buf = encode(packet);
    assert_eq!(frame_len(&buf, usize::MAX).expect("valid"), Some(buf.len()));
    assert_eq!(&Packet::read(buf.freeze()).expect("re-decodes"), packet);
}

// ---- properties -------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn round_trip_through_read_and_write(packet in packet()) {
        let buf = encode(&packet);
        let len = buf.len();
        prop_assert_eq!(frame_len(&buf, len).expect("within the maximum"), Some(len));
        // One byte short: not complete yet.
        prop_assert_eq!(frame_len(&buf[..len - 1], len).expect("valid prefix"), None);
        let decoded = Packet::read(buf.freeze()).expect("decodes");
        prop_assert_eq!(decoded.packet_type(), packet.packet_type());
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn round_trip_through_the_codec_in_chunks(
        packets in vec(packet(), 1..8),
        chunks in vec(1..40usize, 1..64),
    ) {
        let mut codec = MqttCodec::default();
        let mut wire = BytesMut::new();
        for (i, packet) in packets.iter().enumerate() {
            // Both encoder impls, alternately.
            if i % 2 == 0 {
                codec.encode(packet.clone(), &mut wire).expect("encodes");
            } else {
                codec.encode(packet, &mut wire).expect("encodes");
            }
        }
        let mut input = BytesMut::new();
        let mut decoded = Vec::new();
        let mut wire = wire.freeze();
        let mut sizes = chunks.iter().cycle();
        while !wire.is_empty() {
            let size = sizes.next().copied().unwrap_or(1).min(wire.len());
            input.extend_from_slice(&wire.split_to(size));
            decoded.extend(decode_all(&mut codec, &mut input).expect("decodes"));
        }
        prop_assert!(input.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256), max in 0..512usize) {
        if let Ok(Some(len)) = frame_len(&bytes, max) {
            prop_assert!(len <= bytes.len() && len <= max);
            if let Ok(packet) = Packet::read(Bytes::copy_from_slice(&bytes[..len])) {
                assert_reencodes(&packet);
            }
        }
        if let Ok(packet) = Packet::read(Bytes::from(bytes)) {
            assert_reencodes(&packet);
        }
    }

    #[test]
    fn framed_noise_never_panics_and_what_decodes_reencodes(frame in framed_noise()) {
        prop_assert_eq!(frame_len(&frame, usize::MAX).expect("valid framing"), Some(frame.len()));
        if let Ok(packet) = Packet::read(Bytes::from(frame)) {
            assert_reencodes(&packet);
        }
    }

    #[test]
    fn mutated_packets_never_panic_and_what_decodes_reencodes(
        packet in packet(),
        mutations in vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut frame = encode(&packet).to_vec();
        let header_len = frame.len() - frame_body_len(&frame);
        // Change body bytes only, so the frame stays delimited and the packet reader sees it.
        if let Some(body_len) = frame.len().checked_sub(header_len).filter(|&n| n > 0) {
            for (at, byte) in mutations {
                if let Some(b) = frame.get_mut(header_len + at % body_len) {
                    *b = byte;
                }
            }
        }
        if let Ok(decoded) = Packet::read(Bytes::from(frame)) {
            assert_reencodes(&decoded);
        }
    }

    #[test]
    fn codec_never_panics_on_random_input(
        frames in vec(prop_oneof![framed_noise(), vec(any::<u8>(), 0..32)], 0..8),
        chunk in 1..64usize,
        max in 2..256usize,
    ) {
        let mut codec = MqttCodec::new(max);
        let wire: Vec<u8> = frames.concat();
        let mut input = BytesMut::new();
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            match decode_all(&mut codec, &mut input) {
                Ok(packets) => packets.iter().for_each(assert_reencodes),
                Err(_) => break,
            }
            // Never holds more than one packet's worth beyond what was fed.
            prop_assert!(input.capacity() <= max.max(input.len()) + chunk + 64);
        }
    }

    #[test]
    fn frame_len_rejects_large_declared_lengths_from_the_header(
        ty in 1..=14u8,
        max in 2..10_000usize,
        extra in 1..=268_435_455usize,
    ) {
        let declared = (max + extra).min(268_435_455);
        let mut header = vec![ty << 4];
        header.extend(remaining_length(declared));
        // Only the header is there: the body has not been read, and need not be.
        let result = frame_len(&header, max);
        let rejected = matches!(result, Err(DecodeError::PacketTooLarge { max: m, .. }) if m == max);
        prop_assert!(rejected, "{:?}", result);
        // Any prefix of the header is either too large already or waits for more bytes.
        for end in 0..header.len() {
            let result = frame_len(&header[..end], max);
            let waiting_or_rejected =
                matches!(result, Ok(None) | Err(DecodeError::PacketTooLarge { .. }));
            prop_assert!(waiting_or_rejected, "{:?}", result);
        }
        let mut codec = MqttCodec::new(max);
        let mut input = BytesMut::from(&header[..]);
        let result = codec.decode(&mut input);
        let rejected = matches!(result, Err(DecodeError::PacketTooLarge { .. }));
        prop_assert!(rejected, "{:?}", result);
        prop_assert!(input.capacity() <= header.len().max(64));
    }
}
