//! MQTT 3.1.1 packets, their codec and the topic rules — no I/O, no actors.
//!
//! - [`frame_len`] finds where the next packet ends from its fixed header alone, refusing
//!   oversized or malformed headers before their body is buffered;
//! - [`Packet::read`] decodes one whole frame, checking every rule of the specification that a
//!   single packet can break, with strings and payloads sliced from the frame (zero-copy);
//! - [`Packet::write`] encodes a packet into a `BytesMut`;
//! - [`MqttCodec`] wraps the three for `tokio_util::codec::Framed`;
//! - [`validate_topic_name`], [`validate_topic_filter`] and [`topic_matches`] are the topic
//!   rules of section 4.7, shared by the decoder and the broker's router.
//!
//! Every malformed input is a distinct [`DecodeError`] variant; decoding never panics.
//! Normative statements are cited as `[MQTT-x.x.x-y]`.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

mod codec;
mod error;
mod packet;
mod qos;
mod topic;

pub use bytestring::ByteString;

pub use codec::{MqttCodec, DEFAULT_MAX_PACKET_SIZE};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    frame_len, ConnAck, Connect, ConnectReturnCode, FixedHeader, LastWill, Packet, PacketType, PubAck, PubComp, PubRec,
    PubRel, Publish, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode, UnsubAck, Unsubscribe, MAX_FIELD_LEN,
    MAX_REMAINING_LENGTH, PROTOCOL_LEVEL, PROTOCOL_NAME,
};
pub use qos::QoS;
pub use topic::{topic_matches, validate_topic_filter, validate_topic_name, TopicError, MAX_TOPIC_LEN};
