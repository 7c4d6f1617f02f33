//! The byte layout of stored values: hand-written, versioned, checked.
//!
//! Three small record types do not need serde and a format crate, and a layout written out
//! here stays readable by every later build: each value starts with [`VALUE_VERSION`], so a
//! later layout can be added beside this one and old values still decode. Decoding checks every
//! length before it reads, so a truncated or garbled value becomes a [`DecodeError`] (reported
//! as a corrupt store, with its table and key), never a panic or a huge allocation.
//!
//! All integers are little-endian. Layouts (version 1):
//!
//! - retained message: `version u8, qos u8, payload (the rest)`
//! - session record: `version u8, flags u8 (bit 0: disconnected_at follows),
//!   [disconnected_at u64], count u32, count × (filter length u32, filter UTF-8, qos u8)`
//! - message: `version u8, state u8 (0 queued, 1 sent, 2 released), [pkid u16 unless queued],
//!   qos u8, flags u8 (bit 0: retain), topic length u32, topic UTF-8, payload (the rest)`

use amqtt_protocol::{ByteString, QoS};
use bytes::Bytes;

use super::{MessageState, SessionRecord, StoredMessage};

/// The layout version written first in every value.
pub const VALUE_VERSION: u8 = 1;

const STATE_QUEUED: u8 = 0;
const STATE_SENT: u8 = 1;
const STATE_RELEASED: u8 = 2;

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

pub fn encode_retained(qos: QoS, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + payload.len());
    out.push(VALUE_VERSION);
    out.push(qos as u8);
    out.extend_from_slice(payload);
    out
}

pub fn decode_retained(bytes: &[u8]) -> Result<(QoS, Bytes), DecodeError> {
    let mut r = Reader::new(bytes)?;
    let qos = r.qos()?;
    Ok((qos, Bytes::copy_from_slice(r.rest())))
}

pub fn encode_session(record: &SessionRecord) -> Vec<u8> {
    let filters: usize = record.subscriptions.iter().map(|(f, _)| 5 + f.len()).sum();
    let mut out = Vec::with_capacity(2 + 8 + 4 + filters);
    out.push(VALUE_VERSION);
    match record.disconnected_at {
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_le_bytes());
        }
        None => out.push(0),
    }
    put_len(&mut out, record.subscriptions.len());
    for (filter, qos) in &record.subscriptions {
        put_str(&mut out, filter);
        out.push(*qos as u8);
    }
    out
}

pub fn decode_session(bytes: &[u8]) -> Result<SessionRecord, DecodeError> {
    let mut r = Reader::new(bytes)?;
    let flags = r.u8("flags")?;
    if flags > 1 {
        return Err(DecodeError(format!("unknown session flags {flags:#04x}")));
    }
    let disconnected_at = if flags & 1 == 1 { Some(r.u64("disconnected_at")?) } else { None };
    let count = r.u32("subscription count")? as usize;
    // Each subscription takes at least 5 bytes: a garbled count must not allocate gigabytes.
    if count > r.remaining() / 5 {
        return Err(DecodeError(format!("{count} subscriptions cannot fit in the {} bytes left", r.remaining())));
    }
    let mut subscriptions = Vec::with_capacity(count);
    for _ in 0..count {
        let filter = r.string("topic filter")?;
        let qos = r.qos()?;
        subscriptions.push((filter, qos));
    }
    r.finish()?;
    Ok(SessionRecord { subscriptions, disconnected_at })
}

pub fn encode_message(message: &StoredMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 3 + 2 + 4 + message.topic.len() + message.payload.len());
    out.push(VALUE_VERSION);
    match message.state {
        MessageState::Queued => out.push(STATE_QUEUED),
        MessageState::Sent { pkid } => {
            out.push(STATE_SENT);
            out.extend_from_slice(&pkid.to_le_bytes());
        }
        MessageState::Released { pkid } => {
            out.push(STATE_RELEASED);
            out.extend_from_slice(&pkid.to_le_bytes());
        }
    }
    out.push(message.qos as u8);
    out.push(u8::from(message.retain));
    put_str(&mut out, &message.topic);
    out.extend_from_slice(&message.payload);
    out
}

pub fn decode_message(bytes: &[u8]) -> Result<StoredMessage, DecodeError> {
    let mut r = Reader::new(bytes)?;
    let state = match r.u8("state")? {
        STATE_QUEUED => MessageState::Queued,
        STATE_SENT => MessageState::Sent { pkid: r.u16("packet id")? },
        STATE_RELEASED => MessageState::Released { pkid: r.u16("packet id")? },
        other => return Err(DecodeError(format!("unknown message state {other}"))),
    };
    let qos = r.qos()?;
    let retain = match r.u8("flags")? {
        0 => false,
        1 => true,
        other => return Err(DecodeError(format!("unknown message flags {other:#04x}"))),
    };
    let topic = r.string("topic")?;
    let payload = Bytes::copy_from_slice(r.rest());
    Ok(StoredMessage { state, qos, retain, topic, payload })
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Topics, filters and subscription counts are far below 4 GiB (an MQTT string is at most
    // 65535 bytes), so this never saturates in practice.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Reads a value front to back; every read checks the length first.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version byte.
    fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf };
        match r.u8("version")? {
            VALUE_VERSION => Ok(r),
            other => Err(DecodeError(format!(
                "unknown value layout version {other} (this broker reads version {VALUE_VERSION})"
            ))),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!("the value ends early: {what} needs {n} bytes, {} left", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn qos(&mut self) -> Result<QoS, DecodeError> {
        let v = self.u8("qos")?;
        QoS::from_u8(v).ok_or_else(|| DecodeError(format!("invalid qos {v}")))
    }

    fn string(&mut self, what: &str) -> Result<ByteString, DecodeError> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError(format!("{what} is not valid UTF-8")))?;
        Ok(ByteString::from(s))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError(format!("{n} unexpected bytes after the end of the value"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(state: MessageState) -> StoredMessage {
        StoredMessage {
            state,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: ByteString::from("a/ü/c"),
            payload: Bytes::from_static(b"\x00payload\xff"),
        }
    }

    #[test]
    fn values_round_trip() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(decode_retained(&encode_retained(qos, b"xyz")).unwrap(), (qos, Bytes::from_static(b"xyz")));
        }
        assert_eq!(decode_retained(&encode_retained(QoS::AtLeastOnce, b"")).unwrap().1, Bytes::new());

        for record in [
            SessionRecord::default(),
            SessionRecord {
                subscriptions: vec![
                    ("a/+".into(), QoS::AtLeastOnce),
                    ("#".into(), QoS::ExactlyOnce),
                    ("".into(), QoS::AtMostOnce),
                ],
                disconnected_at: Some(u64::MAX),
            },
        ] {
            assert_eq!(decode_session(&encode_session(&record)).unwrap(), record);
        }

        for state in [MessageState::Queued, MessageState::Sent { pkid: 1 }, MessageState::Released { pkid: 65535 }] {
            let m = message(state);
            assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
        }
        let plain = StoredMessage { retain: false, payload: Bytes::new(), ..message(MessageState::Queued) };
        assert_eq!(decode_message(&encode_message(&plain)).unwrap(), plain);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let record = SessionRecord { subscriptions: vec![("a/b".into(), QoS::AtLeastOnce)], disconnected_at: Some(7) };
        let session = encode_session(&record);
        for len in 0..session.len() {
            assert!(decode_session(&session[..len]).is_err(), "session cut at {len}");
        }
        let m = encode_message(&message(MessageState::Sent { pkid: 9 }));
        // The payload is the rest of the value: only cuts before it can be detected.
        let header = m.len() - b"\x00payload\xff".len();
        for len in 0..header {
            assert!(decode_message(&m[..len]).is_err(), "message cut at {len}");
        }
        assert!(decode_retained(&[]).is_err());
        assert!(decode_retained(&[VALUE_VERSION]).is_err());
    }

    #[test]
    fn garbled_values_are_errors() {
        let err = |r: Result<SessionRecord, DecodeError>| r.unwrap_err().to_string();
        assert_eq!(
            err(decode_session(&[9, 0, 0, 0, 0, 0])),
            "unknown value layout version 9 (this broker reads version 1)"
        );
        assert_eq!(err(decode_session(&[1, 4, 0, 0, 0, 0])), "unknown session flags 0x04");
        // A huge count is refused before allocating.
        assert_eq!(
            err(decode_session(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0])),
            "4294967295 subscriptions cannot fit in the 1 bytes left"
        );
        let mut trailing = encode_session(&SessionRecord::default());
        trailing.push(0);
        assert_eq!(err(decode_session(&trailing)), "1 unexpected bytes after the end of the value");
        let bad_utf8 = [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 1];
        assert_eq!(err(decode_session(&bad_utf8)), "topic filter is not valid UTF-8");

        assert_eq!(decode_retained(&[1, 3]).unwrap_err().to_string(), "invalid qos 3");
        assert_eq!(decode_message(&[1, 7]).unwrap_err().to_string(), "unknown message state 7");
        assert_eq!(decode_message(&[1, 0, 1, 2]).unwrap_err().to_string(), "unknown message flags 0x02");
        assert_eq!(
            decode_message(&[1, 0, 1, 0, 5, 0, 0, 0, b'a']).unwrap_err().to_string(),
            "the value ends early: topic needs 5 bytes, 1 left"
        );
    }
}
