//! A `tokio_util` codec over [`frame_len`], [`Packet::read`] and [`Packet::write`], for
//! `Framed` transports.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{DecodeError, EncodeError};
use crate::packet::{frame_len, FixedHeader, Packet};

/// The packet size limit of [`MqttCodec::default`]: 1 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024;

/// Decodes and encodes MQTT 3.1.1 packets.
///
/// Decoding refuses a packet larger than `max_packet_size` (fixed header included) as soon as its
/// fixed header shows the size, and never reserves more than the packet being read, so a peer
/// cannot make the buffer grow past the limit. Decoded packets share the read buffer's memory
/// (zero-copy), so a payload kept for long keeps its part of that buffer alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttCodec {
    max_packet_size: usize,
}

impl MqttCodec {
    /// A codec refusing packets larger than `max_packet_size` bytes in total.
    pub fn new(max_packet_size: usize) -> Self {
        MqttCodec { max_packet_size }
    }

    /// The largest packet this codec decodes, fixed header included.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }
}

impl Default for MqttCodec {
    fn default() -> Self {
        MqttCodec::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        if let Some(len) = frame_len(src, self.max_packet_size)? {
            let frame = src.split_to(len).freeze();
            return Packet::read(frame).map(Some);
        }
        // Incomplete: make room for the rest of this packet only, once its size is known
        // (already checked against the maximum).
        if let Some(header) = FixedHeader::read(src, self.max_packet_size)? {
            src.reserve(header.frame_len().saturating_sub(src.len()));
        }
        Ok(None)
    }
}

impl Encoder<Packet> for MqttCodec {
    type Error = EncodeError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), EncodeError> {
        packet.write(dst)
    }
}

impl Encoder<&Packet> for MqttCodec {
    type Error = EncodeError;

    fn encode(&mut self, packet: &Packet, dst: &mut BytesMut) -> Result<(), EncodeError> {
        packet.write(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PubAck;

    #[test]
    fn decodes_packets_one_at_a_time() {
        let mut codec = MqttCodec::default();
        let mut buf = BytesMut::from(&[0x40, 0x02, 0x00, 0x01, 0xc0, 0x00, 0xe0][..]);
        assert_eq!(codec.decode(&mut buf).expect("valid"), Some(Packet::PubAck(PubAck { pkid: 1 })));
        assert_eq!(codec.decode(&mut buf).expect("valid"), Some(Packet::PingReq));
        assert_eq!(codec.decode(&mut buf).expect("valid"), None);
        buf.extend_from_slice(&[0x00]);
        assert_eq!(codec.decode(&mut buf).expect("valid"), Some(Packet::Disconnect));
        assert!(buf.is_empty());
    }

    #[test]
    fn reserves_only_the_packet_being_read() {
        let mut codec = MqttCodec::new(300);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x30, 0xc8, 0x01]); // PUBLISH, 200 bytes remaining
        assert_eq!(codec.decode(&mut buf).expect("valid"), None);
        assert!(buf.capacity() >= 203);
        assert!(buf.capacity() <= 300);
    }

    #[test]
    fn refuses_oversized_packets_from_the_header() {
        let mut codec = MqttCodec::new(100);
        let mut buf = BytesMut::from(&[0x30, 0xc8, 0x01][..]);
        assert!(matches!(codec.decode(&mut buf), Err(DecodeError::PacketTooLarge { size: 203, max: 100 })));
        assert_eq!(buf.capacity(), 3);
    }

    #[test]
    fn encodes_owned_and_borrowed_packets() {
        let mut codec = MqttCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(Packet::PingResp, &mut buf).expect("encodes");
        codec.encode(&Packet::PingReq, &mut buf).expect("encodes");
        assert_eq!(&buf[..], &[0xd0, 0x00, 0xc0, 0x00]);
    }
}
