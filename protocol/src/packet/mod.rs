//! The packet enum, the fixed header every packet starts with, and the field helpers all packets
//! share (MQTT 3.1.1 sections 1.5 and 2).
//!
//! Decoding is split in two steps so that a network reader never buffers more than it allows:
//! [`frame_len`] looks only at the fixed header and says how long the packet is, then
//! [`Packet::read`] decodes one whole frame. Strings and payloads of the decoded packet are
//! slices of that frame, not copies.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::{DecodeError, EncodeError};

mod ack;
mod connack;
mod connect;
mod publish;
mod suback;
mod subscribe;
mod unsubscribe;

pub use ack::{PubAck, PubComp, PubRec, PubRel, UnsubAck};
pub use connack::{ConnAck, ConnectReturnCode};
pub use connect::{Connect, LastWill, PROTOCOL_LEVEL, PROTOCOL_NAME};
pub use publish::Publish;
pub use suback::{SubAck, SubscribeReturnCode};
pub use subscribe::{Subscribe, SubscribeFilter};
pub use unsubscribe::Unsubscribe;

/// Largest remaining length four length bytes can encode (MQTT 3.1.1 section 2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Longest string or binary field: the length prefix is 16 bits (MQTT 3.1.1 section 1.5.3).
pub const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// The control packet type, the high nibble of the first byte.
///
/// Kept separate from [`Packet`] so errors and logs can name a packet without holding one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
}

impl PacketType {
    /// The packet type for the high nibble of a first byte; `None` for the reserved 0 and 15.
    pub fn from_u8(v: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            _ => return None,
        })
    }

    /// The low nibble table 2.2 requires, `None` for PUBLISH whose flags are DUP, QoS and RETAIN.
    pub fn required_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0b0000),
        }
    }

    /// The name the specification uses, e.g. `"CONNECT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::ConnAck => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fixed header: packet type, flags and the length of what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Bytes taken by the fixed header itself: 2 to 5.
    pub header_len: usize,
    /// Bytes of the packet after the fixed header.
    pub remaining_length: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the start of `buf`; `Ok(None)` while it is incomplete.
    ///
    /// Fails as early as the bytes allow: on a reserved packet type from the first byte, on a
    /// fifth length byte, and as soon as the length bytes seen so far put the packet over
    /// `max_packet_size` (even before the last length byte arrives). Flags are not checked here.
    pub fn read(buf: &[u8], max_packet_size: usize) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = PacketType::from_u8(first >> 4).ok_or(DecodeError::InvalidPacketType(first >> 4))?;
        let mut remaining_length = 0usize;
        for (i, &byte) in buf.iter().skip(1).take(4).enumerate() {
            remaining_length += usize::from(byte & 0x7f) << (7 * i);
            let header_len = i + 2;
            if byte & 0x80 == 0 {
                let size = header_len + remaining_length;
                if size > max_packet_size {
                    return Err(DecodeError::PacketTooLarge { size, max: max_packet_size });
                }
                return Ok(Some(FixedHeader { packet_type, flags: first & 0x0f, header_len, remaining_length }));
            }
            if i == 3 {
                return Err(DecodeError::MalformedRemainingLength);
            }
            // Another length byte follows, so the packet is at least this big.
            let size = header_len + 1 + remaining_length;
            if size > max_packet_size {
                return Err(DecodeError::PacketTooLarge { size, max: max_packet_size });
            }
        }
        Ok(None)
    }

    /// Total length of the packet: fixed header plus remaining length.
    pub fn frame_len(&self) -> usize {
        self.header_len.saturating_add(self.remaining_length)
    }

    /// Checks the flags against table 2.2 [MQTT-2.2.2-1] [MQTT-2.2.2-2].
    fn check_flags(&self) -> Result<(), DecodeError> {
        match self.packet_type.required_flags() {
            Some(expected) if expected != self.flags => {
                Err(DecodeError::InvalidFixedHeaderFlags { packet: self.packet_type, actual: self.flags, expected })
            }
            _ => Ok(()),
        }
    }
}

/// Length of the first complete packet in `buf` (fixed header + remaining length), Ok(None) when
/// more bytes are needed. Fails as soon as the header shows a malformed remaining length (more
/// than 4 bytes) or a packet larger than `max_packet_size` bytes in total — before any of its
/// body is buffered. Also fails on an unknown packet type (0 or 15) from the first byte alone.
pub fn frame_len(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>, DecodeError> {
    Ok(FixedHeader::read(buf, max_packet_size)?.map(|header| header.frame_len()).filter(|&len| len <= buf.len()))
}

/// One MQTT 3.1.1 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect,
}

impl Packet {
    /// Decodes exactly one whole packet: `frame` holds the fixed header and the full remaining
    /// length, as delimited by [`frame_len`]. Strings and payloads are zero-copy slices of `frame`.
    pub fn read(frame: Bytes) -> Result<Packet, DecodeError> {
        let header = FixedHeader::read(&frame, usize::MAX)?.ok_or(DecodeError::IncompleteHeader(frame.len()))?;
        if header.frame_len() != frame.len() {
            return Err(DecodeError::FrameLengthMismatch {
                packet: header.packet_type,
                declared: header.frame_len(),
                actual: frame.len(),
            });
        }
        header.check_flags()?;
        let mut body = frame;
        body.advance(header.header_len);
        Ok(match header.packet_type {
            PacketType::Connect => Packet::Connect(Connect::read(body)?),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::read(body)?),
            PacketType::Publish => Packet::Publish(Publish::read(header.flags, body)?),
            PacketType::PubAck => Packet::PubAck(PubAck::read(body)?),
            PacketType::PubRec => Packet::PubRec(PubRec::read(body)?),
            PacketType::PubRel => Packet::PubRel(PubRel::read(body)?),
            PacketType::PubComp => Packet::PubComp(PubComp::read(body)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::read(body)?),
            PacketType::SubAck => Packet::SubAck(SubAck::read(body)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::read(body)?),
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::read(body)?),
            PacketType::PingReq => {
                Reader::new(PacketType::PingReq, body).finish()?;
                Packet::PingReq
            }
            PacketType::PingResp => {
                Reader::new(PacketType::PingResp, body).finish()?;
                Packet::PingResp
            }
            PacketType::Disconnect => {
                Reader::new(PacketType::Disconnect, body).finish()?;
                Packet::Disconnect
            }
        })
    }

    /// Appends the encoded packet to `buf` (reserving what it needs). On error `buf` is left
    /// unchanged.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(p) => p.write(buf),
            Packet::ConnAck(p) => p.write(buf),
            Packet::Publish(p) => p.write(buf),
            Packet::PubAck(p) => p.write(buf),
            Packet::PubRec(p) => p.write(buf),
            Packet::PubRel(p) => p.write(buf),
            Packet::PubComp(p) => p.write(buf),
            Packet::Subscribe(p) => p.write(buf),
            Packet::SubAck(p) => p.write(buf),
            Packet::Unsubscribe(p) => p.write(buf),
            Packet::UnsubAck(p) => p.write(buf),
            Packet::PingReq => put_header(buf, PacketType::PingReq, 0),
            Packet::PingResp => put_header(buf, PacketType::PingResp, 0),
            Packet::Disconnect => put_header(buf, PacketType::Disconnect, 0),
        }
    }

    /// The type of this packet, for logs and errors.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }
}

macro_rules! impl_from_for_packet {
    ($($name:ident),* $(,)?) => {
        $(
            impl From<$name> for Packet {
                fn from(packet: $name) -> Packet {
                    Packet::$name(packet)
                }
            }
        )*
    };
}

impl_from_for_packet!(
    Connect,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
);

/// A cursor over a packet body that turns every shortfall into a typed error naming the packet
/// and the field, so packet readers contain no bounds arithmetic of their own.
pub(crate) struct Reader {
    packet: PacketType,
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(packet: PacketType, body: Bytes) -> Reader {
        Reader { packet, buf: body }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn too_short(&self, field: &'static str) -> DecodeError {
        DecodeError::BodyTooShort { packet: self.packet, field }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        if self.buf.remaining() < 1 {
            return Err(self.too_short(field));
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        if self.buf.remaining() < 2 {
            return Err(self.too_short(field));
        }
        Ok(self.buf.get_u16())
    }

    /// A packet identifier, which must be non-zero [MQTT-2.3.1-1].
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16("packet identifier")? {
            0 => Err(DecodeError::ZeroPacketId { packet: self.packet }),
            id => Ok(id),
        }
    }

    /// Length-prefixed binary data (MQTT 3.1.1 section 1.5.3, used for will message and password).
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let declared = usize::from(self.u16(field)?);
        if declared > self.buf.len() {
            return Err(DecodeError::FieldExceedsPacket {
                packet: self.packet,
                field,
                declared,
                remaining: self.buf.len(),
            });
        }
        Ok(self.buf.split_to(declared))
    }

    /// A length-prefixed UTF-8 string without U+0000 [MQTT-1.5.3-1] [MQTT-1.5.3-2].
    pub(crate) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let bytes = self.binary(field)?;
        // In UTF-8 the byte 0 only ever encodes U+0000.
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter { packet: self.packet, field });
        }
        ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8 { packet: self.packet, field })
    }

    /// Everything left: the PUBLISH payload.
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }

    /// Ends the body: the remaining length must be used exactly.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { packet: self.packet, extra: self.buf.len() })
        }
    }
}

/// Encoded size of a length-prefixed field of `len` bytes, or the error if it cannot have one.
///
/// Writers call this for every field while computing the remaining length, before writing
/// anything, so that [`put_field`] can never truncate and a failed write leaves `buf` untouched.
pub(crate) fn field_len(packet: PacketType, field: &'static str, len: usize) -> Result<usize, EncodeError> {
    if len > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong { packet, field, len });
    }
    Ok(2 + len)
}

/// Writes a length-prefixed field already checked by [`field_len`].
pub(crate) fn put_field(buf: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(bytes.len() <= MAX_FIELD_LEN, "checked by field_len");
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

/// Checks the remaining length, reserves the whole packet in `buf` and writes the fixed header
/// with the flags table 2.2 requires.
pub(crate) fn put_header(buf: &mut BytesMut, packet: PacketType, remaining_length: usize) -> Result<(), EncodeError> {
    let flags = packet.required_flags().unwrap_or(0);
    put_header_with_flags(buf, packet, flags, remaining_length)
}

/// [`put_header`] with explicit flags, for PUBLISH.
pub(crate) fn put_header_with_flags(
    buf: &mut BytesMut,
    packet: PacketType,
    flags: u8,
    remaining_length: usize,
) -> Result<(), EncodeError> {
    if remaining_length > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge { packet, len: remaining_length });
    }
    let length_bytes = match remaining_length {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    buf.reserve(1 + length_bytes + remaining_length);
    buf.put_u8(((packet as u8) << 4) | (flags & 0x0f));
    let mut len = remaining_length;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

/// Helpers for the packet tests: build frames by hand, encode packets.
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// A frame with the given first byte and body, the remaining length filled in (< 128).
    pub(crate) fn frame(first: u8, body: &[u8]) -> Bytes {
        let mut buf = vec![first, body.len() as u8];
        buf.extend_from_slice(body);
        Bytes::from(buf)
    }

    /// Encodes `packet`, checks the result decodes back to it, and returns the bytes.
    pub(crate) fn round_trip(packet: impl Into<Packet>) -> Vec<u8> {
        let packet = packet.into();
        let mut buf = BytesMut::new();
        packet.write(&mut buf).expect("encodes");
        assert_eq!(frame_len(&buf, usize::MAX).expect("valid"), Some(buf.len()));
        let bytes = buf.to_vec();
        assert_eq!(Packet::read(buf.freeze()).expect("decodes"), packet);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(packet: &Packet) -> BytesMut {
        let mut buf = BytesMut::new();
        packet.write(&mut buf).expect("encodes");
        buf
    }

    #[test]
    fn packet_type_names_and_values() {
        for v in 1..=14u8 {
            let ty = PacketType::from_u8(v).expect("valid type");
            assert_eq!(ty as u8, v);
        }
        assert_eq!(PacketType::from_u8(0), None);
        assert_eq!(PacketType::from_u8(15), None);
        assert_eq!(PacketType::Connect.to_string(), "CONNECT");
        assert_eq!(PacketType::PubRel.to_string(), "PUBREL");
        assert_eq!(PacketType::Disconnect.to_string(), "DISCONNECT");
    }

    #[test]
    fn remaining_length_boundaries() {
        // (remaining length, its encoding) from MQTT 3.1.1 table 2.4.
        let cases: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ];
        for (len, encoded) in cases {
            let mut buf = BytesMut::new();
            put_header(&mut buf, PacketType::PubAck, len).expect("encodes");
            assert_eq!(buf.get(1..), Some(encoded), "{len}");
            let header = FixedHeader::read(&buf, usize::MAX).expect("valid").expect("complete");
            assert_eq!(header.remaining_length, len);
            assert_eq!(header.header_len, 1 + encoded.len());
            assert!(buf.capacity() >= header.frame_len());
        }
    }

    #[test]
    fn remaining_length_over_the_maximum_is_an_encode_error() {
        let mut buf = BytesMut::new();
        let err = put_header(&mut buf, PacketType::PubAck, MAX_REMAINING_LENGTH + 1);
        assert!(matches!(err, Err(EncodeError::PacketTooLarge { len: 268_435_456, .. })));
        assert!(buf.is_empty());
    }

    #[test]
    fn fifth_length_byte_is_malformed() {
        let buf = [0x30, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(matches!(frame_len(&buf, usize::MAX), Err(DecodeError::MalformedRemainingLength)));
        // Detected from the fourth byte's continuation bit, without waiting for the fifth.
        assert!(matches!(frame_len(&buf[..5], usize::MAX), Err(DecodeError::MalformedRemainingLength)));
        assert!(matches!(frame_len(&buf[..4], usize::MAX), Ok(None)));
    }

    #[test]
    fn reserved_packet_types_fail_from_the_first_byte() {
        assert!(matches!(frame_len(&[0x00], 1024), Err(DecodeError::InvalidPacketType(0))));
        assert!(matches!(frame_len(&[0xf0], 1024), Err(DecodeError::InvalidPacketType(15))));
        assert!(matches!(Packet::read(Bytes::from_static(&[0xf0, 0x00])), Err(DecodeError::InvalidPacketType(15))));
    }

    #[test]
    fn frame_len_waits_for_the_whole_packet() {
        assert!(matches!(frame_len(&[], 1024), Ok(None)));
        assert!(matches!(frame_len(&[0x40], 1024), Ok(None)));
        assert!(matches!(frame_len(&[0x40, 0x02], 1024), Ok(None)));
        assert!(matches!(frame_len(&[0x40, 0x02, 0x00], 1024), Ok(None)));
        assert!(matches!(frame_len(&[0x40, 0x02, 0x00, 0x01], 1024), Ok(Some(4))));
        // Bytes of the next packet do not change the answer.
        assert!(matches!(frame_len(&[0x40, 0x02, 0x00, 0x01, 0xc0], 1024), Ok(Some(4))));
    }

    #[test]
    fn frame_len_rejects_oversized_packets_from_the_header() {
        // 4 + 200 = 204 bytes declared, max 100: rejected with only the header seen.
        assert!(matches!(
            frame_len(&[0x30, 0xc8, 0x01], 100),
            Err(DecodeError::PacketTooLarge { size: 203, max: 100 })
        ));
        // A continuation byte alone already shows at least 2 + 1 + 127 bytes.
        assert!(matches!(frame_len(&[0x30, 0xff], 100), Err(DecodeError::PacketTooLarge { size: 130, max: 100 })));
        // Exactly the maximum is allowed.
        assert!(matches!(frame_len(&[0xc0, 0x00], 2), Ok(Some(2))));
        assert!(matches!(frame_len(&[0xc0, 0x00], 1), Err(DecodeError::PacketTooLarge { size: 2, max: 1 })));
    }

    #[test]
    fn reserved_flags_must_match_table_2_2() {
        // PUBACK with flags 0b0001.
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0x41, 0x02, 0x00, 0x01])),
            Err(DecodeError::InvalidFixedHeaderFlags { packet: PacketType::PubAck, actual: 0b0001, expected: 0b0000 })
        ));
        // PUBREL with flags 0b0000 instead of 0b0010.
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0x60, 0x02, 0x00, 0x01])),
            Err(DecodeError::InvalidFixedHeaderFlags { packet: PacketType::PubRel, actual: 0, expected: 0b0010 })
        ));
        // SUBSCRIBE and UNSUBSCRIBE with flags 0.
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00])),
            Err(DecodeError::InvalidFixedHeaderFlags { packet: PacketType::Subscribe, .. })
        ));
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xa0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'])),
            Err(DecodeError::InvalidFixedHeaderFlags { packet: PacketType::Unsubscribe, .. })
        ));
        // PINGREQ and DISCONNECT with flags set.
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xc8, 0x00])),
            Err(DecodeError::InvalidFixedHeaderFlags { packet: PacketType::PingReq, .. })
        ));
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xe2, 0x00])),
            Err(DecodeError::InvalidFixedHeaderFlags { packet: PacketType::Disconnect, .. })
        ));
    }

    #[test]
    fn empty_packets_round_trip() {
        for (packet, bytes) in
            [(Packet::PingReq, [0xc0, 0x00]), (Packet::PingResp, [0xd0, 0x00]), (Packet::Disconnect, [0xe0, 0x00])]
        {
            assert_eq!(&encode(&packet)[..], &bytes[..]);
            assert_eq!(Packet::read(Bytes::copy_from_slice(&bytes)).expect("valid"), packet);
        }
    }

    #[test]
    fn empty_packets_with_a_body_are_errors() {
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xc0, 0x01, 0x00])),
            Err(DecodeError::TrailingBytes { packet: PacketType::PingReq, extra: 1 })
        ));
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xd0, 0x02, 0x00, 0x00])),
            Err(DecodeError::TrailingBytes { packet: PacketType::PingResp, extra: 2 })
        ));
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xe0, 0x01, 0xff])),
            Err(DecodeError::TrailingBytes { packet: PacketType::Disconnect, extra: 1 })
        ));
    }

    #[test]
    fn frame_must_be_exactly_the_declared_length() {
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0x40, 0x02, 0x00])),
            Err(DecodeError::FrameLengthMismatch { packet: PacketType::PubAck, declared: 4, actual: 3 })
        ));
        assert!(matches!(
            Packet::read(Bytes::from_static(&[0xc0, 0x00, 0xc0, 0x00])),
            Err(DecodeError::FrameLengthMismatch { packet: PacketType::PingReq, declared: 2, actual: 4 })
        ));
        assert!(matches!(Packet::read(Bytes::new()), Err(DecodeError::IncompleteHeader(0))));
        assert!(matches!(Packet::read(Bytes::from_static(&[0x30, 0x80])), Err(DecodeError::IncompleteHeader(2))));
    }

    #[test]
    fn strings_are_checked() {
        let read =
            |body: &'static [u8]| Reader::new(PacketType::Publish, Bytes::from_static(body)).string("topic name");
        assert_eq!(read(&[0x00, 0x02, b'h', b'i']).expect("valid"), "hi");
        assert_eq!(read(&[0x00, 0x00]).expect("valid"), "");
        assert!(matches!(read(&[0x00]), Err(DecodeError::BodyTooShort { field: "topic name", .. })));
        assert!(matches!(
            read(&[0x00, 0x05, b'h', b'i']),
            Err(DecodeError::FieldExceedsPacket { declared: 5, remaining: 2, .. })
        ));
        assert!(matches!(
            read(&[0x00, 0x02, 0xc3, 0x28]),
            Err(DecodeError::InvalidUtf8 { packet: PacketType::Publish, field: "topic name" })
        ));
        // A UTF-16 surrogate encoded as UTF-8 (U+D800) is not valid UTF-8.
        assert!(matches!(read(&[0x00, 0x03, 0xed, 0xa0, 0x80]), Err(DecodeError::InvalidUtf8 { .. })));
        assert!(matches!(
            read(&[0x00, 0x03, b'a', 0x00, b'b']),
            Err(DecodeError::NullCharacter { packet: PacketType::Publish, field: "topic name" })
        ));
    }

    #[test]
    fn long_fields_are_encode_errors() {
        assert!(matches!(
            field_len(PacketType::Connect, "client identifier", 65_536),
            Err(EncodeError::FieldTooLong { len: 65_536, .. })
        ));
        assert!(matches!(field_len(PacketType::Connect, "client identifier", 65_535), Ok(65_537)));
    }

    #[test]
    fn strings_are_zero_copy_slices_of_the_frame() {
        let frame = Bytes::from_static(&[0x00, 0x03, b'a', b'b', b'c']);
        let start = frame.as_ptr();
        let s = Reader::new(PacketType::Publish, frame).string("topic name").expect("valid");
        assert_eq!(s.as_bytes().as_ptr(), start.wrapping_add(2));
    }
}
