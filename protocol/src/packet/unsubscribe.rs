//! UNSUBSCRIBE: a client drops some of its subscriptions (MQTT 3.1.1 section 3.10).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{field_len, put_field, put_header, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};
use crate::topic::validate_topic_filter;

const PACKET: PacketType = PacketType::Unsubscribe;

/// The topic filters to unsubscribe from, exactly as they were subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Non-zero.
    pub pkid: u16,
    /// At least one, each a valid topic filter.
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    /// Decodes the body: packet identifier, then filters up to the end.
    pub fn read(body: Bytes) -> Result<Unsubscribe, DecodeError> {
        let mut r = Reader::new(PACKET, body);
        let pkid = r.packet_id()?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter)
                .map_err(|source| DecodeError::InvalidTopicFilter { packet: PACKET, source })?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters { packet: PACKET });
        }
        Ok(Unsubscribe { pkid, filters })
    }

    /// Encodes the packet. An empty filter list is written although a server will reject it.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut len = 2usize;
        for filter in &self.filters {
            len = len.saturating_add(field_len(PACKET, "topic filter", filter.len())?);
        }
        put_header(buf, PACKET, len)?;
        buf.put_u16(self.pkid);
        for filter in &self.filters {
            put_field(buf, filter.as_bytes());
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
        Packet::read(frame(0xa2, body))
    }

    #[test]
    fn round_trips() {
        let unsub =
            Unsubscribe { pkid: 3, filters: vec![ByteString::from_static("a/#"), ByteString::from_static("+")] };
        assert_eq!(round_trip(unsub), [0xa2, 0x0a, 0x00, 0x03, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x01, b'+']);
    }

    #[test]
    fn packet_id_must_be_non_zero() {
        assert!(matches!(
            read(&[0x00, 0x00, 0x00, 0x01, b'a']),
            Err(DecodeError::ZeroPacketId { packet: PacketType::Unsubscribe })
        ));
    }

    #[test]
    fn at_least_one_filter() {
        assert!(matches!(read(&[0x00, 0x01]), Err(DecodeError::NoTopicFilters { packet: PacketType::Unsubscribe })));
    }

    #[test]
    fn filters_must_be_valid() {
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x03, b'#', b'/', b'a']),
            Err(DecodeError::InvalidTopicFilter {
                packet: PacketType::Unsubscribe,
                source: TopicError::MisplacedMultiLevelWildcard
            })
        ));
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x01, 0xfe]),
            Err(DecodeError::InvalidUtf8 { packet: PacketType::Unsubscribe, field: "topic filter" })
        ));
        assert!(matches!(
            read(&[0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
            Err(DecodeError::BodyTooShort { packet: PacketType::Unsubscribe, field: "topic filter" })
        ));
    }
}
