//! Raw-byte packet builders, for input the codec would refuse to produce (malformed packets,
//! reserved flags, MQTT 5 CONNECTs) and for several packets sent in one write.

use bytes::BytesMut;

use crate::Packet;

/// A packet with the given first byte (type and flags) and body, the remaining length encoded
/// as section 2.2.3 says. The body is taken as it is, so it may be anything at all.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = fixed_header(first, body.len());
    out.extend_from_slice(body);
    out
}

/// A fixed header announcing `remaining` bytes (any number, even one over the protocol's
/// 268,435,455), for a packet whose body is sent separately or never.
pub fn fixed_header(first: u8, remaining: usize) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = remaining;
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            return out;
        }
    }
}

/// A length-prefixed field (section 1.5.3): two bytes of length, big-endian, then `bytes`
/// unchecked, so invalid UTF-8 or U+0000 can be sent.
pub fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// The encoding of a well-formed `packet`, for tests that put several packets in one write (so
/// the broker reads them together) or cut one short.
pub fn encode(packet: impl Into<Packet>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.into().write(&mut buf).expect("test packet must encode");
    buf.to_vec()
}
