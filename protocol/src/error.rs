//! What can go wrong when reading or writing packets.
//!
//! Every malformed input has its own variant, so the broker can log precisely what a client got
//! wrong and tests can assert which rule caught it. Any decode error means the connection must be
//! closed (MQTT 3.1.1 section 4.8); the variant only says why.

use thiserror::Error;

use crate::packet::PacketType;
use crate::topic::TopicError;

/// A packet (or the start of one) that is not valid MQTT 3.1.1.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The first byte names packet type 0 or 15, which are reserved.
    #[error("invalid packet type {0}: 0 and 15 are reserved")]
    InvalidPacketType(u8),
    /// The low nibble of the first byte differs from what table 2.2 requires.
    #[error("{packet}: fixed header flags are {actual:#06b}, must be {expected:#06b} [MQTT-2.2.2-1]")]
    InvalidFixedHeaderFlags { packet: PacketType, actual: u8, expected: u8 },
    /// The fourth remaining-length byte has its continuation bit set.
    #[error("malformed remaining length: longer than 4 bytes [MQTT-2.2.3]")]
    MalformedRemainingLength,
    /// The fixed header announces a packet bigger than the configured maximum.
    #[error("packet of at least {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    /// [`Packet::read`](crate::Packet::read) was given fewer bytes than a fixed header needs.
    #[error("frame of {0} bytes is too short for a fixed header")]
    IncompleteHeader(usize),
    /// [`Packet::read`](crate::Packet::read) was given a frame whose length is not the one its
    /// fixed header declares.
    #[error("{packet}: frame is {actual} bytes but its fixed header declares {declared}")]
    FrameLengthMismatch { packet: PacketType, declared: usize, actual: usize },
    /// The remaining length ends before a field the packet requires.
    #[error("{packet}: remaining length ends before the {field}")]
    BodyTooShort { packet: PacketType, field: &'static str },
    /// The remaining length is longer than what the packet's fields use.
    #[error("{packet}: {extra} unexpected bytes after the last field")]
    TrailingBytes { packet: PacketType, extra: usize },
    /// A length-prefixed string or binary field claims more bytes than are left in the packet.
    #[error("{packet}: {field} declares {declared} bytes but only {remaining} are left in the packet")]
    FieldExceedsPacket { packet: PacketType, field: &'static str, declared: usize, remaining: usize },
    /// A string field is not well-formed UTF-8.
    #[error("{packet}: {field} is not valid UTF-8 [MQTT-1.5.3-1]")]
    InvalidUtf8 { packet: PacketType, field: &'static str },
    /// A string field contains U+0000.
    #[error("{packet}: {field} contains U+0000 [MQTT-1.5.3-2]")]
    NullCharacter { packet: PacketType, field: &'static str },
    /// A packet identifier is zero.
    #[error("{packet}: packet identifier is 0, must be non-zero [MQTT-2.3.1-1]")]
    ZeroPacketId { packet: PacketType },
    /// A QoS field holds 3 (PUBLISH header, CONNECT will QoS, SUBSCRIBE requested QoS).
    #[error("{packet}: {field} is 3, which is reserved")]
    InvalidQoS { packet: PacketType, field: &'static str },
    /// CONNECT: bit 0 of the connect flags is reserved.
    #[error("CONNECT: reserved connect flag (bit 0) is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// CONNECT: a will QoS without the will flag.
    #[error("CONNECT: will QoS is {0} but the will flag is not set [MQTT-3.1.2-13]")]
    WillQoSWithoutWill(u8),
    /// CONNECT: will retain without the will flag.
    #[error("CONNECT: will retain is set but the will flag is not [MQTT-3.1.2-15]")]
    WillRetainWithoutWill,
    /// CONNECT: a password flag without the user name flag.
    #[error("CONNECT: password flag is set but the user name flag is not [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// CONNECT: the protocol level is not 4 and what follows it is not a valid MQTT 3.1.1
    /// CONNECT (e.g. an MQTT 5 CONNECT with properties). The broker answers CONNACK 0x01
    /// (unacceptable protocol version) and closes [MQTT-3.1.2-2].
    #[error("CONNECT: protocol level {level} is not supported and the packet is not MQTT 3.1.1: {source}")]
    UnsupportedProtocolLevel { level: u8, source: Box<DecodeError> },
    /// CONNACK: bits 7-1 of the acknowledge flags are reserved.
    #[error("CONNACK: reserved acknowledge flags are set ({0:#010b}) [MQTT-3.2.2-1]")]
    ConnAckReservedFlags(u8),
    /// CONNACK: a return code above 5.
    #[error("CONNACK: unknown return code {0}")]
    InvalidConnectReturnCode(u8),
    /// PUBLISH: the DUP flag on a QoS 0 message.
    #[error("PUBLISH: DUP flag is set on a QoS 0 message [MQTT-3.3.1-2]")]
    DupWithQoS0,
    /// PUBLISH topic or CONNECT will topic is not a valid topic name.
    #[error("{packet}: invalid topic name: {source}")]
    InvalidTopicName { packet: PacketType, source: TopicError },
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter.
    #[error("{packet}: no topic filter [MQTT-3.8.3-3] [MQTT-3.10.3-2]")]
    NoTopicFilters { packet: PacketType },
    /// SUBSCRIBE or UNSUBSCRIBE with an invalid topic filter.
    #[error("{packet}: invalid topic filter: {source}")]
    InvalidTopicFilter { packet: PacketType, source: TopicError },
    /// SUBSCRIBE: the upper 6 bits of a requested QoS byte are reserved.
    #[error("SUBSCRIBE: reserved bits of the requested QoS byte are set ({0:#010b}) [MQTT-3.8.3-4]")]
    SubscribeReservedBits(u8),
    /// SUBACK: a return code other than 0, 1, 2 or 0x80.
    #[error("SUBACK: invalid return code {0:#04x}")]
    InvalidSubscribeReturnCode(u8),
    /// The transport failed (required by `tokio_util::codec::Decoder`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A packet that cannot be represented on the wire.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// A string or binary field longer than its 16-bit length prefix can describe.
    #[error("{packet}: {field} is {len} bytes, the maximum is 65535")]
    FieldTooLong { packet: PacketType, field: &'static str, len: usize },
    /// A packet whose remaining length exceeds 268,435,455 bytes.
    #[error("{packet}: remaining length {len} exceeds the maximum of 268435455")]
    PacketTooLarge { packet: PacketType, len: usize },
    /// The transport failed (required by `tokio_util::codec::Encoder`).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
