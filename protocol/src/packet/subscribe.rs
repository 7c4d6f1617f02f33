//! SUBSCRIBE: a client asks for the messages matching some topic filters (MQTT 3.1.1 section 3.8).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{field_len, put_field, put_header, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};
use crate::qos::QoS;
use crate::topic::validate_topic_filter;

const PACKET: PacketType = PacketType::Subscribe;

/// A subscription request: one or more filters, each with the maximum QoS the client wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Non-zero.
    pub pkid: u16,
    /// At least one.
    pub filters: Vec<SubscribeFilter>,
}

/// One topic filter of a SUBSCRIBE and its requested QoS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscribeFilter {
    /// A valid topic filter (wildcards allowed).
    pub filter: ByteString,
    pub qos: QoS,
}

impl Subscribe {
    /// Decodes the body: packet identifier, then (filter, requested QoS) pairs up to the end.
    pub fn read(body: Bytes) -> Result<Subscribe, DecodeError> {
        let mut r = Reader::new(PACKET, body);
        let pkid = r.packet_id()?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter)
                .map_err(|source| DecodeError::InvalidTopicFilter { packet: PACKET, source })?;
            let options = r.u8("requested QoS")?;
            if options & 0xfc != 0 {
                return Err(DecodeError::SubscribeReservedBits(options));
            }
            let qos =
                QoS::from_u8(options).ok_or(DecodeError::InvalidQoS { packet: PACKET, field: "requested QoS" })?;
            filters.push(SubscribeFilter { filter, qos });
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters { packet: PACKET });
        }
        Ok(Subscribe { pkid, filters })
    }

    /// Encodes the packet. An empty filter list is written although a server will reject it.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut len = 2usize;
        for f in &self.filters {
            len = len.saturating_add(field_len(PACKET, "topic filter", f.filter.len())? + 1);
        }
        put_header(buf, PACKET, len)?;
        buf.put_u16(self.pkid);
        for f in &self.filters {
            put_field(buf, f.filter.as_bytes());
            buf.put_u8(f.qos.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{frame, round_trip};
    use super::*;
    use crate::packet::Packet;
    use crate::topic::TopicError;

    fn read(body: &[u8]) -> Result<Packet, DecodeError> {
        Packet::read(frame(0x82, body))
    }

    #[test]
    fn round_trips() {
        let sub = Subscribe {
            pkid: 10,
            filters: vec![
                SubscribeFilter { filter: ByteString::from_static("a/+"), qos: QoS::AtLeastOnce },
                SubscribeFilter { filter: ByteString::from_static("#"), qos: QoS::ExactlyOnce },
            ],
        };
        assert_eq!(
            round_trip(sub),
            [0x82, 0x0c, 0x00, 0x0a, 0x00, 0x03, b'a', b'/', b'+', 0x01, 0x00, 0x01, b'#', 0x02]
        );
    }

    #[test]
    fn packet_id_must_be_non_zero() {
        assert!(matches!(
            read(&[0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
            Err(DecodeError::ZeroPacketId { packet: PacketType::Subscribe })
        ));
    }

    #[test]
    fn at_least_one_filter() {
        assert!(matches!(read(&[0x00, 0x01]), Err(DecodeError::NoTopicFilters { packet: PacketType::Subscribe })));
    }

    #[test]
    fn filters_must_be_valid() {
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00]),
            Err(DecodeError::InvalidTopicFilter {
                packet: PacketType::Subscribe,
                source: TopicError::MisplacedMultiLevelWildcard
            })
        ));
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x02, b'a', b'+', 0x00]),
            Err(DecodeError::InvalidTopicFilter { source: TopicError::MisplacedSingleLevelWildcard, .. })
        ));
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x00, 0x00]),
            Err(DecodeError::InvalidTopicFilter { source: TopicError::Empty, .. })
        ));
    }

    #[test]
    fn requested_qos_byte() {
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
            Err(DecodeError::InvalidQoS { packet: PacketType::Subscribe, field: "requested QoS" })
        ));
        assert!(matches!(read(&[0x00, 0x01, 0x00, 0x01, b'a', 0x04]), Err(DecodeError::SubscribeReservedBits(0x04))));
        assert!(matches!(read(&[0x00, 0x01, 0x00, 0x01, b'a', 0x81]), Err(DecodeError::SubscribeReservedBits(0x81))));
        // A filter without its QoS byte.
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x01, b'a']),
            Err(DecodeError::BodyTooShort { packet: PacketType::Subscribe, field: "requested QoS" })
        ));
    }

    #[test]
    fn truncated_filter() {
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x05, b'a', 0x00]),
            Err(DecodeError::FieldExceedsPacket { field: "topic filter", declared: 5, remaining: 2, .. })
        ));
        assert!(matches!(read(&[0x00, 0x01, 0x00]), Err(DecodeError::BodyTooShort { field: "topic filter", .. })));
        assert!(matches!(read(&[0x00]), Err(DecodeError::BodyTooShort { field: "packet identifier", .. })));
    }
}
