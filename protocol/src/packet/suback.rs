//! SUBACK: the server's answer to SUBSCRIBE, one return code per filter (MQTT 3.1.1 section 3.9).

use bytes::{BufMut, Bytes, BytesMut};

use super::{put_header, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};
use crate::qos::QoS;

const PACKET: PacketType = PacketType::SubAck;

/// The granted QoS (or failure) for each filter of a SUBSCRIBE, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The identifier of the SUBSCRIBE; non-zero.
    pub pkid: u16,
    pub return_codes: Vec<SubscribeReturnCode>,
}

/// The answer for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    /// Subscribed, with this maximum QoS.
    Success(QoS),
    /// Refused (0x80).
    Failure,
}

impl SubscribeReturnCode {
    /// The code for a wire value: 0, 1, 2 or 0x80.
    pub fn from_u8(v: u8) -> Option<SubscribeReturnCode> {
        match v {
            0x80 => Some(SubscribeReturnCode::Failure),
            v => QoS::from_u8(v).map(SubscribeReturnCode::Success),
        }
    }
}

impl From<SubscribeReturnCode> for u8 {
    fn from(code: SubscribeReturnCode) -> u8 {
        match code {
            SubscribeReturnCode::Success(qos) => qos.into(),
            SubscribeReturnCode::Failure => 0x80,
        }
    }
}

impl SubAck {
    /// Decodes the body: packet identifier, then one return code per remaining byte.
    pub fn read(body: Bytes) -> Result<SubAck, DecodeError> {
        let mut r = Reader::new(PACKET, body);
        let pkid = r.packet_id()?;
        // One byte per code, so the capacity is bounded by the frame.
        let mut return_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8("return code")?;
            return_codes.push(SubscribeReturnCode::from_u8(code).ok_or(DecodeError::InvalidSubscribeReturnCode(code))?);
        }
        Ok(SubAck { pkid, return_codes })
    }

    /// Encodes the packet.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_header(buf, PACKET, self.return_codes.len().saturating_add(2))?;
        buf.put_u16(self.pkid);
        for &code in &self.return_codes {
            buf.put_u8(code.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{frame, round_trip};
    use super::*;
    use crate::packet::Packet;

    #[test]
    fn round_trips() {
        let ack = SubAck {
            pkid: 10,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Success(QoS::ExactlyOnce),
                SubscribeReturnCode::Failure,
            ],
        };
        assert_eq!(round_trip(ack), [0x90, 0x06, 0x00, 0x0a, 0x00, 0x01, 0x02, 0x80]);
    }

    #[test]
    fn return_codes() {
        for v in [0u8, 1, 2, 0x80] {
            assert_eq!(SubscribeReturnCode::from_u8(v).map(u8::from), Some(v));
        }
        for v in [3u8, 0x7f, 0x81, 0xff] {
            assert_eq!(SubscribeReturnCode::from_u8(v), None);
        }
    }

    #[test]
    fn invalid_return_code_is_an_error() {
        assert!(matches!(
            Packet::read(frame(0x90, &[0x00, 0x01, 0x00, 0x03])),
            Err(DecodeError::InvalidSubscribeReturnCode(3))
        ));
        assert!(matches!(
            Packet::read(frame(0x90, &[0x00, 0x01, 0x81])),
            Err(DecodeError::InvalidSubscribeReturnCode(0x81))
        ));
    }

    #[test]
    fn packet_id_must_be_non_zero() {
        assert!(matches!(
            Packet::read(frame(0x90, &[0x00, 0x00, 0x00])),
            Err(DecodeError::ZeroPacketId { packet: PacketType::SubAck })
        ));
    }
}
