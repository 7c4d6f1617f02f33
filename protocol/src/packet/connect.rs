//! CONNECT: the first packet a client sends (MQTT 3.1.1 section 3.1).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{field_len, put_field, put_header, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};
use crate::qos::QoS;
use crate::topic::validate_topic_name;

/// The protocol name of MQTT 3.1.1.
pub const PROTOCOL_NAME: &str = "MQTT";
/// The protocol level of MQTT 3.1.1.
pub const PROTOCOL_LEVEL: u8 = 4;

const PACKET: PacketType = PacketType::Connect;

const RESERVED: u8 = 0x01;
const CLEAN_SESSION: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// A connection request.
///
/// The protocol name and level are returned as sent: rejecting an unsupported version is the
/// broker's decision, which it answers with CONNACK 0x01 [MQTT-3.1.2-2]. Everything else is
/// checked while decoding.
///
/// `Debug` shows whether there is a password, never the password: a CONNECT printed into a log
/// must not put a secret there.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// `"MQTT"` for 3.1.1.
    pub protocol_name: ByteString,
    /// 4 for 3.1.1.
    pub protocol_level: u8,
    pub clean_session: bool,
    /// Seconds; 0 disables the keep-alive mechanism.
    pub keep_alive: u16,
    /// May be empty (the server then assigns one, if it allows it).
    pub client_id: ByteString,
    pub will: Option<LastWill>,
    pub username: Option<ByteString>,
    /// Binary data, not necessarily UTF-8.
    pub password: Option<Bytes>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("protocol_name", &self.protocol_name)
            .field("protocol_level", &self.protocol_level)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The message the server publishes on the client's behalf when it disconnects abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// A topic name: no wildcards.
    pub topic: ByteString,
    pub message: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

impl Connect {
    /// Decodes the body of a CONNECT (the fixed header flags are already checked).
    ///
    /// If the protocol level is not 4 and the rest does not parse as MQTT 3.1.1 (an MQTT 5
    /// CONNECT, say), the error is [`DecodeError::UnsupportedProtocolLevel`], so the broker can
    /// still answer CONNACK 0x01 as [MQTT-3.1.2-2] requires.
    pub fn read(body: Bytes) -> Result<Connect, DecodeError> {
        let mut r = Reader::new(PACKET, body);
        let protocol_name = r.string("protocol name")?;
        let protocol_level = r.u8("protocol level")?;
        Self::read_after_level(protocol_name, protocol_level, r).map_err(|err| {
            if protocol_level == PROTOCOL_LEVEL {
                err
            } else {
                DecodeError::UnsupportedProtocolLevel { level: protocol_level, source: Box::new(err) }
            }
        })
    }

    fn read_after_level(protocol_name: ByteString, protocol_level: u8, mut r: Reader) -> Result<Connect, DecodeError> {
        let flags = r.u8("connect flags")?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & WILL != 0;
        let will_qos = (flags >> WILL_QOS_SHIFT) & 0x03;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && will_qos != 0 {
            return Err(DecodeError::WillQoSWithoutWill(will_qos));
        }
        if !will_flag && will_retain {
            return Err(DecodeError::WillRetainWithoutWill);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS { packet: PACKET, field: "will QoS" })?;
        let username_flag = flags & USERNAME != 0;
        let password_flag = flags & PASSWORD != 0;
        if password_flag && !username_flag {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;

        // Payload: each field present iff its flag is set, in this order [MQTT-3.1.3-1].
        let client_id = r.string("client identifier")?;
        let will = if will_flag {
            let topic = r.string("will topic")?;
            validate_topic_name(&topic).map_err(|source| DecodeError::InvalidTopicName { packet: PACKET, source })?;
            let message = r.binary("will message")?;
            Some(LastWill { topic, message, qos: will_qos, retain: will_retain })
        } else {
            None
        };
        let username = match username_flag {
            true => Some(r.string("user name")?),
            false => None,
        };
        let password = match password_flag {
            true => Some(r.binary("password")?),
            false => None,
        };
        r.finish()?;
        Ok(Connect {
            protocol_name,
            protocol_level,
            clean_session: flags & CLEAN_SESSION != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
        })
    }

    /// Encodes the packet. Fields are written as given: a password without a user name, for
    /// one, is written although a server will reject it.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut len = field_len(PACKET, "protocol name", self.protocol_name.len())?
            + 1 // protocol level
            + 1 // connect flags
            + 2 // keep alive
            + field_len(PACKET, "client identifier", self.client_id.len())?;
        let mut flags = 0;
        if self.clean_session {
            flags |= CLEAN_SESSION;
        }
        if let Some(will) = &self.will {
            len += field_len(PACKET, "will topic", will.topic.len())?
                + field_len(PACKET, "will message", will.message.len())?;
            flags |= WILL | (u8::from(will.qos) << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if let Some(username) = &self.username {
            len += field_len(PACKET, "user name", username.len())?;
            flags |= USERNAME;
        }
        if let Some(password) = &self.password {
            len += field_len(PACKET, "password", password.len())?;
            flags |= PASSWORD;
        }

        put_header(buf, PACKET, len)?;
        put_field(buf, self.protocol_name.as_bytes());
        buf.put_u8(self.protocol_level);
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        put_field(buf, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            put_field(buf, will.topic.as_bytes());
            put_field(buf, &will.message);
        }
        if let Some(username) = &self.username {
            put_field(buf, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_field(buf, password);
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

    #[test]
    fn debug_does_not_show_the_password() {
        let connect = Connect {
            protocol_name: PROTOCOL_NAME.into(),
            protocol_level: PROTOCOL_LEVEL,
            clean_session: true,
            keep_alive: 60,
            client_id: "c1".into(),
            will: None,
            username: Some("alice".into()),
            password: Some(Bytes::from_static(b"s3cret-pa55")),
        };
        for shown in [format!("{connect:?}"), format!("{:?}", Packet::Connect(connect.clone()))] {
            assert!(!shown.contains("s3cret-pa55") && !shown.contains("115, 51"), "{shown}");
            assert!(shown.contains("alice") && shown.contains("password: Some(\"<redacted>\")"), "{shown}");
        }
        let anonymous = Connect { password: None, ..connect };
        assert!(format!("{anonymous:?}").contains("password: None"));
    }

    /// Variable header of an MQTT 3.1.1 CONNECT with the given flags and keep alive 60.
    fn header(flags: u8) -> Vec<u8> {
        vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3c]
    }

    fn read(body: &[u8]) -> Result<Packet, DecodeError> {
        Packet::read(frame(0x10, body))
    }

    fn minimal() -> Connect {
        Connect {
            protocol_name: ByteString::from_static("MQTT"),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: ByteString::from_static("abc"),
            will: None,
            username: None,
            password: None,
        }
    }

    #[test]
    fn minimal_connect() {
        let mut body = header(0x02);
        body.extend_from_slice(&[0x00, 0x03, b'a', b'b', b'c']);
        assert_eq!(read(&body).expect("valid"), Packet::Connect(minimal()));
        let mut expected = vec![0x10, body.len() as u8];
        expected.extend_from_slice(&body);
        assert_eq!(round_trip(minimal()), expected);
    }

    #[test]
    fn full_connect() {
        let mut body = header(0b1111_0100); // user, password, will retain, will QoS 2, will
        body.extend_from_slice(&[0x00, 0x00]); // empty client id
        body.extend_from_slice(&[0x00, 0x03, b'a', b'/', b'b']); // will topic
        body.extend_from_slice(&[0x00, 0x02, 0xff, 0x00]); // will message: binary
        body.extend_from_slice(&[0x00, 0x01, b'u']); // user name
        body.extend_from_slice(&[0x00, 0x02, 0xc3, 0x28]); // password: not UTF-8, still fine
        let expected = Connect {
            clean_session: false,
            client_id: ByteString::new(),
            will: Some(LastWill {
                topic: ByteString::from_static("a/b"),
                message: Bytes::from_static(&[0xff, 0x00]),
                qos: QoS::ExactlyOnce,
                retain: true,
            }),
            username: Some(ByteString::from_static("u")),
            password: Some(Bytes::from_static(&[0xc3, 0x28])),
            ..minimal()
        };
        assert_eq!(read(&body).expect("valid"), Packet::Connect(expected.clone()));
        assert_eq!(round_trip(expected).get(2..), Some(&body[..]));
    }

    #[test]
    fn protocol_name_and_level_are_not_validated() {
        let body = [0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x00, 0x00, 0x01, b'x'];
        let Packet::Connect(connect) = read(&body).expect("valid") else {
            panic!("not a CONNECT");
        };
        assert_eq!(connect.protocol_name, "MQIsdp");
        assert_eq!(connect.protocol_level, 3);
    }

    #[test]
    fn mqtt5_connect_is_an_unsupported_level() {
        // MQTT 5: a properties length (0) follows keep alive.
        let body = [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x02, b'i', b'd'];
        assert!(matches!(read(&body), Err(DecodeError::UnsupportedProtocolLevel { level: 5, .. })));
    }

    #[test]
    fn reserved_flag_must_be_zero() {
        let mut body = header(0x03);
        body.extend_from_slice(&[0x00, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::ConnectReservedFlag)));
    }

    #[test]
    fn will_qos_and_retain_require_the_will_flag() {
        let mut body = header(0x08); // will QoS 1, no will
        body.extend_from_slice(&[0x00, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::WillQoSWithoutWill(1))));
        let mut body = header(0x20); // will retain, no will
        body.extend_from_slice(&[0x00, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::WillRetainWithoutWill)));
    }

    #[test]
    fn will_qos_3_is_an_error() {
        let mut body = header(0x1c);
        body.extend_from_slice(&[0x00, 0x00, 0x00, 0x01, b't', 0x00, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::InvalidQoS { packet: PacketType::Connect, field: "will QoS" })));
    }

    #[test]
    fn password_requires_user_name() {
        let mut body = header(0x40);
        body.extend_from_slice(&[0x00, 0x00, 0x00, 0x01, b'p']);
        assert!(matches!(read(&body), Err(DecodeError::PasswordWithoutUsername)));
    }

    #[test]
    fn will_topic_must_be_a_topic_name() {
        let mut body = header(0x04);
        body.extend_from_slice(&[0x00, 0x00, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x00]);
        assert!(matches!(
            read(&body),
            Err(DecodeError::InvalidTopicName { packet: PacketType::Connect, source: TopicError::WildcardInName })
        ));
        let mut body = header(0x04);
        body.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::InvalidTopicName { source: TopicError::Empty, .. })));
    }

    #[test]
    fn flagged_fields_must_be_present() {
        // Will flag set but no will topic.
        let mut body = header(0x04);
        body.extend_from_slice(&[0x00, 0x00]);
        assert!(matches!(
            read(&body),
            Err(DecodeError::BodyTooShort { packet: PacketType::Connect, field: "will topic" })
        ));
        // User name flag set but no user name.
        let mut body = header(0x80);
        body.extend_from_slice(&[0x00, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::BodyTooShort { field: "user name", .. })));
        // Password longer than the packet.
        let mut body = header(0xc0);
        body.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x09, b'p']);
        assert!(matches!(
            read(&body),
            Err(DecodeError::FieldExceedsPacket { field: "password", declared: 9, remaining: 1, .. })
        ));
    }

    #[test]
    fn unflagged_fields_must_be_absent() {
        // A user name without its flag is trailing garbage.
        let mut body = header(0x02);
        body.extend_from_slice(&[0x00, 0x00, 0x00, 0x01, b'u']);
        assert!(matches!(read(&body), Err(DecodeError::TrailingBytes { packet: PacketType::Connect, extra: 3 })));
    }

    #[test]
    fn truncated_variable_header() {
        assert!(matches!(
            read(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00]),
            Err(DecodeError::BodyTooShort { field: "keep alive", .. })
        ));
        assert!(matches!(
            read(&[0x00, 0x04, b'M', b'Q']),
            Err(DecodeError::FieldExceedsPacket { field: "protocol name", .. })
        ));
        assert!(matches!(read(&header(0x02)), Err(DecodeError::BodyTooShort { field: "client identifier", .. })));
    }

    #[test]
    fn client_id_must_be_utf8_without_nul() {
        let mut body = header(0x02);
        body.extend_from_slice(&[0x00, 0x01, 0xff]);
        assert!(matches!(read(&body), Err(DecodeError::InvalidUtf8 { field: "client identifier", .. })));
        let mut body = header(0x02);
        body.extend_from_slice(&[0x00, 0x01, 0x00]);
        assert!(matches!(read(&body), Err(DecodeError::NullCharacter { field: "client identifier", .. })));
    }

    #[test]
    fn long_fields_are_encode_errors() {
        let connect = Connect {
            password: Some(Bytes::from(vec![0; 65_536])),
            username: Some(ByteString::from_static("u")),
            ..minimal()
        };
        let mut buf = BytesMut::new();
        assert!(matches!(
            connect.write(&mut buf),
            Err(EncodeError::FieldTooLong { packet: PacketType::Connect, field: "password", len: 65_536 })
        ));
        assert!(buf.is_empty());
        let connect = Connect { client_id: ByteString::from("c".repeat(65_536)), ..minimal() };
        assert!(matches!(connect.write(&mut buf), Err(EncodeError::FieldTooLong { field: "client identifier", .. })));
    }
}
