//! CONNACK: the server's answer to CONNECT (MQTT 3.1.1 section 3.2).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::{put_header, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};

const PACKET: PacketType = PacketType::ConnAck;

/// Whether the connection was accepted, and whether the server still had a session for the
/// client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnAck {
    /// Must be false when `code` is not [`ConnectReturnCode::Accepted`] [MQTT-3.2.2-4].
    pub session_present: bool,
    pub code: ConnectReturnCode,
}

/// The CONNACK return code (MQTT 3.1.1 table 3.1). The discriminants are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUserNameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The code for a wire value, `None` above 5.
    pub fn from_u8(v: u8) -> Option<ConnectReturnCode> {
        use ConnectReturnCode::*;
        Some(match v {
            0 => Accepted,
            1 => UnacceptableProtocolVersion,
            2 => IdentifierRejected,
            3 => ServerUnavailable,
            4 => BadUserNameOrPassword,
            5 => NotAuthorized,
            _ => return None,
        })
    }
}

impl From<ConnectReturnCode> for u8 {
    fn from(code: ConnectReturnCode) -> u8 {
        code as u8
    }
}

impl fmt::Display for ConnectReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectReturnCode::Accepted => "connection accepted",
            ConnectReturnCode::UnacceptableProtocolVersion => "connection refused: unacceptable protocol version",
            ConnectReturnCode::IdentifierRejected => "connection refused: identifier rejected",
            ConnectReturnCode::ServerUnavailable => "connection refused: server unavailable",
            ConnectReturnCode::BadUserNameOrPassword => "connection refused: bad user name or password",
            ConnectReturnCode::NotAuthorized => "connection refused: not authorized",
        })
    }
}

impl ConnAck {
    /// Decodes the two-byte body: acknowledge flags, return code.
    pub fn read(body: Bytes) -> Result<ConnAck, DecodeError> {
        let mut r = Reader::new(PACKET, body);
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xfe != 0 {
            return Err(DecodeError::ConnAckReservedFlags(flags));
        }
        let code = r.u8("return code")?;
        let code = ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidConnectReturnCode(code))?;
        r.finish()?;
        Ok(ConnAck { session_present: flags & 0x01 != 0, code })
    }

    /// Encodes the packet.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_header(buf, PACKET, 2)?;
        buf.put_u8(u8::from(self.session_present));
        buf.put_u8(self.code.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{frame, round_trip};
    use super::*;
    use crate::packet::Packet;

    fn read(body: &[u8]) -> Result<Packet, DecodeError> {
        Packet::read(frame(0x20, body))
    }

    #[test]
    fn round_trips() {
        let ack = ConnAck { session_present: true, code: ConnectReturnCode::Accepted };
        assert_eq!(round_trip(ack), [0x20, 0x02, 0x01, 0x00]);
        let nack = ConnAck { session_present: false, code: ConnectReturnCode::NotAuthorized };
        assert_eq!(round_trip(nack), [0x20, 0x02, 0x00, 0x05]);
        assert_eq!(
            read(&[0x00, 0x04]).expect("valid"),
            Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::BadUserNameOrPassword })
        );
    }

    #[test]
    fn return_codes() {
        for v in 0..=5u8 {
            assert_eq!(ConnectReturnCode::from_u8(v).map(u8::from), Some(v));
        }
        assert_eq!(ConnectReturnCode::from_u8(6), None);
        assert_eq!(
            ConnectReturnCode::BadUserNameOrPassword.to_string(),
            "connection refused: bad user name or password"
        );
    }

    #[test]
    fn reserved_acknowledge_flags_must_be_zero() {
        assert!(matches!(read(&[0x02, 0x00]), Err(DecodeError::ConnAckReservedFlags(0x02))));
        assert!(matches!(read(&[0x81, 0x00]), Err(DecodeError::ConnAckReservedFlags(0x81))));
    }

    #[test]
    fn unknown_return_code_is_an_error() {
        assert!(matches!(read(&[0x00, 0x06]), Err(DecodeError::InvalidConnectReturnCode(6))));
    }

    #[test]
    fn length_must_be_exactly_two() {
        assert!(matches!(
            read(&[0x00]),
            Err(DecodeError::BodyTooShort { packet: PacketType::ConnAck, field: "return code" })
        ));
        assert!(matches!(
            read(&[0x00, 0x00, 0x00]),
            Err(DecodeError::TrailingBytes { packet: PacketType::ConnAck, extra: 1 })
        ));
    }
}
