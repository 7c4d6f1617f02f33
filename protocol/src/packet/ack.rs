//! PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK (MQTT 3.1.1 sections 3.4-3.7 and 3.11).
//!
//! All five are a fixed header and a packet identifier, nothing else, so one macro defines them
//! and they stay distinct types: the QoS state machines cannot mistake a PUBREC for a PUBCOMP.

use bytes::{BufMut, Bytes, BytesMut};

use super::{put_header, PacketType, Reader};
use crate::error::{DecodeError, EncodeError};

macro_rules! ack_packet {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name {
            /// The identifier of the packet being acknowledged; non-zero.
            pub pkid: u16,
        }

        impl $name {
            /// Decodes the body: exactly a non-zero packet identifier.
            pub fn read(body: Bytes) -> Result<$name, DecodeError> {
                let mut r = Reader::new(PacketType::$name, body);
                let pkid = r.packet_id()?;
                r.finish()?;
                Ok($name { pkid })
            }

            /// Encodes the packet.
            pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
                put_header(buf, PacketType::$name, 2)?;
                buf.put_u16(self.pkid);
                Ok(())
            }
        }
    };
}

ack_packet!(
    /// Acknowledges a QoS 1 PUBLISH.
    PubAck
);
ack_packet!(
    /// First answer to a QoS 2 PUBLISH: received.
    PubRec
);
ack_packet!(
    /// Answer to PUBREC: release the message (fixed header flags 0b0010).
    PubRel
);
ack_packet!(
    /// Last step of QoS 2: complete.
    PubComp
);
ack_packet!(
    /// Acknowledges an UNSUBSCRIBE.
    UnsubAck
);

#[cfg(test)]
mod tests {
    use super::super::test_util::{frame, round_trip};
    use super::*;
    use crate::packet::Packet;

    const FIRST_BYTES: [(PacketType, u8); 5] = [
        (PacketType::PubAck, 0x40),
        (PacketType::PubRec, 0x50),
        (PacketType::PubRel, 0x62),
        (PacketType::PubComp, 0x70),
        (PacketType::UnsubAck, 0xb0),
    ];

    #[test]
    fn round_trips() {
        assert_eq!(round_trip(PubAck { pkid: 1 }), [0x40, 0x02, 0x00, 0x01]);
        assert_eq!(round_trip(PubRec { pkid: 0x1234 }), [0x50, 0x02, 0x12, 0x34]);
        assert_eq!(round_trip(PubRel { pkid: 2 }), [0x62, 0x02, 0x00, 0x02]);
        assert_eq!(round_trip(PubComp { pkid: 0xffff }), [0x70, 0x02, 0xff, 0xff]);
        assert_eq!(round_trip(UnsubAck { pkid: 7 }), [0xb0, 0x02, 0x00, 0x07]);
    }

    #[test]
    fn packet_id_must_be_non_zero() {
        for (packet, first) in FIRST_BYTES {
            let err = Packet::read(frame(first, &[0x00, 0x00]));
            assert!(matches!(err, Err(DecodeError::ZeroPacketId { packet: p }) if p == packet), "{packet}: {err:?}");
        }
    }

    #[test]
    fn remaining_length_must_be_exactly_two() {
        for (packet, first) in FIRST_BYTES {
            let err = Packet::read(frame(first, &[0x00, 0x01, 0x00]));
            assert!(
                matches!(err, Err(DecodeError::TrailingBytes { packet: p, extra: 1 }) if p == packet),
                "{packet}: {err:?}"
            );
            let err = Packet::read(frame(first, &[0x00]));
            assert!(
                matches!(err, Err(DecodeError::BodyTooShort { packet: p, field: "packet identifier" }) if p == packet),
                "{packet}: {err:?}"
            );
        }
    }
}
