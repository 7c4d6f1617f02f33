//! PUBLISH: an application message, in either direction (MQTT 3.1.1 section 3.3).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{field_len, put_field, put_header_with_flags, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};
use crate::qos::QoS;
use crate::topic::validate_topic_name;

const PACKET: PacketType = PacketType::Publish;

const RETAIN: u8 = 0b0001;
const QOS_SHIFT: u8 = 1;
const DUP: u8 = 0b1000;

/// An application message. The payload is a slice of the received frame, so it can be routed
/// to any number of subscribers without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Set on a redelivery of a QoS 1/2 message; never with QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// A topic name: no wildcards.
    pub topic: ByteString,
    /// 0 for QoS 0 (the field is not on the wire then); non-zero otherwise.
    pub pkid: u16,
    /// The rest of the packet; may be empty.
    pub payload: Bytes,
}

impl Publish {
    /// Decodes a PUBLISH from the fixed header flags (DUP, QoS, RETAIN) and the body.
    pub fn read(flags: u8, body: Bytes) -> Result<Publish, DecodeError> {
        let qos = QoS::from_u8((flags >> QOS_SHIFT) & 0x03)
            .ok_or(DecodeError::InvalidQoS { packet: PACKET, field: "QoS" })?;
        let dup = flags & DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        let mut r = Reader::new(PACKET, body);
        let topic = r.string("topic name")?;
        validate_topic_name(&topic).map_err(|source| DecodeError::InvalidTopicName { packet: PACKET, source })?;
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => r.packet_id()?,
        };
        Ok(Publish { dup, qos, retain: flags & RETAIN != 0, topic, pkid, payload: r.rest() })
    }

    /// Encodes the packet. With QoS 0 `pkid` is not written; DUP is written as given.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let has_pkid = self.qos != QoS::AtMostOnce;
        let len = field_len(PACKET, "topic name", self.topic.len())?
            .saturating_add(if has_pkid { 2 } else { 0 })
            .saturating_add(self.payload.len());
        let mut flags = u8::from(self.qos) << QOS_SHIFT;
        if self.dup {
            flags |= DUP;
        }
        if self.retain {
            flags |= RETAIN;
        }
        put_header_with_flags(buf, PACKET, flags, len)?;
        put_field(buf, self.topic.as_bytes());
        if has_pkid {
            buf.put_u16(self.pkid);
        }
        buf.put_slice(&self.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{frame, round_trip};
    use super::*;
    use crate::packet::Packet;
    use crate::topic::TopicError;

    fn publish(qos: QoS, pkid: u16, payload: &'static [u8]) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteString::from_static("a/b"),
            pkid,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn qos0_has_no_packet_id() {
        let p = publish(QoS::AtMostOnce, 0, b"hi");
        assert_eq!(round_trip(p), [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i']);
    }

    #[test]
    fn qos1_and_qos2_carry_a_packet_id() {
        let p = Publish { dup: true, retain: true, ..publish(QoS::AtLeastOnce, 10, b"x") };
        assert_eq!(round_trip(p), [0x3b, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0a, b'x']);
        let p = publish(QoS::ExactlyOnce, 0xffff, b"");
        assert_eq!(round_trip(p), [0x34, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0xff, 0xff]);
    }

    #[test]
    fn empty_payload() {
        let packet = Packet::read(frame(0x31, &[0x00, 0x01, b't'])).expect("valid");
        assert_eq!(
            packet,
            Packet::Publish(Publish {
                retain: true,
                topic: ByteString::from_static("t"),
                ..publish(QoS::AtMostOnce, 0, b"")
            })
        );
    }

    #[test]
    fn payload_is_a_slice_of_the_frame() {
        let frame = frame(0x30, &[0x00, 0x01, b't', 1, 2, 3]);
        let start = frame.as_ptr();
        let Packet::Publish(p) = Packet::read(frame).expect("valid") else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.payload.as_ptr(), start.wrapping_add(5));
        assert_eq!(p.topic.as_bytes().as_ptr(), start.wrapping_add(4));
    }

    #[test]
    fn qos_3_is_an_error() {
        assert!(matches!(
            Packet::read(frame(0x36, &[0x00, 0x01, b't', 0x00, 0x01])),
            Err(DecodeError::InvalidQoS { packet: PacketType::Publish, field: "QoS" })
        ));
    }

    #[test]
    fn dup_with_qos0_is_an_error() {
        assert!(matches!(Packet::read(frame(0x38, &[0x00, 0x01, b't'])), Err(DecodeError::DupWithQoS0)));
    }

    #[test]
    fn topic_must_be_a_valid_name() {
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00, 0x03, b'a', b'/', b'+'])),
            Err(DecodeError::InvalidTopicName { packet: PacketType::Publish, source: TopicError::WildcardInName })
        ));
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00, 0x01, b'#'])),
            Err(DecodeError::InvalidTopicName { source: TopicError::WildcardInName, .. })
        ));
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00, 0x00, b'x'])),
            Err(DecodeError::InvalidTopicName { source: TopicError::Empty, .. })
        ));
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00, 0x01, 0x00])),
            Err(DecodeError::NullCharacter { packet: PacketType::Publish, field: "topic name" })
        ));
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00, 0x01, 0x80])),
            Err(DecodeError::InvalidUtf8 { packet: PacketType::Publish, .. })
        ));
    }

    #[test]
    fn packet_id_must_be_present_and_non_zero() {
        assert!(matches!(
            Packet::read(frame(0x32, &[0x00, 0x01, b't', 0x00, 0x00])),
            Err(DecodeError::ZeroPacketId { packet: PacketType::Publish })
        ));
        assert!(matches!(
            Packet::read(frame(0x34, &[0x00, 0x01, b't', 0x01])),
            Err(DecodeError::BodyTooShort { packet: PacketType::Publish, field: "packet identifier" })
        ));
    }

    #[test]
    fn truncated_topic() {
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00])),
            Err(DecodeError::BodyTooShort { field: "topic name", .. })
        ));
        assert!(matches!(
            Packet::read(frame(0x30, &[0x00, 0x04, b'a'])),
            Err(DecodeError::FieldExceedsPacket { declared: 4, remaining: 1, .. })
        ));
    }

    #[test]
    fn long_topic_is_an_encode_error() {
        let p = Publish { topic: ByteString::from("t".repeat(65_536)), ..publish(QoS::AtMostOnce, 0, b"") };
        let mut buf = BytesMut::new();
        assert!(matches!(
            p.write(&mut buf),
            Err(EncodeError::FieldTooLong { packet: PacketType::Publish, field: "topic name", len: 65_536 })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn payload_over_the_maximum_remaining_length_is_an_encode_error() {
        let p = Publish { payload: Bytes::from(vec![0u8; 268_435_455]), ..publish(QoS::AtMostOnce, 0, b"") };
        let mut buf = BytesMut::new();
        assert!(matches!(
            p.write(&mut buf),
            Err(EncodeError::PacketTooLarge { packet: PacketType::Publish, len: 268_435_460 })
        ));
        assert!(buf.is_empty());
    }
}
