//! Messages on their way from the broker to one client: the in-flight window of QoS 1/2
//! messages awaiting acknowledgement, and the bounded queue behind it.
//!
//! Pure state, no I/O, so that it can be handed from one connection to the next when a
//! persistent session is resumed, and tested on its own. Every change of its size is tallied
//! for the broker's in-flight and queued gauges (`crate::stats::outbound_changed`, a
//! thread-local addition), including when it is dropped, so the gauges follow it wherever it
//! moves.

use std::collections::VecDeque;

use amqtt_protocol::{Packet, PubRel, Publish, QoS};

use crate::stats::outbound_changed;

/// What a message sent to the client waits for next in its QoS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// QoS 1 sent: PUBACK.
    Ack,
    /// QoS 2 sent: PUBREC.
    Received,
    /// PUBREL sent: PUBCOMP.
    Complete,
}

#[derive(Debug, Clone)]
struct InFlight {
    publish: Publish,
    stage: Awaiting,
}

/// What happened to a message that did not fit in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The queue was full and this older QoS 0 message made room for the new one.
    OldestQoS0 { topic: String },
    /// The queue was full of QoS 1/2 messages: the new message was refused.
    Incoming { topic: String, qos: QoS },
}

/// The broker's `max-inflight-messages` and `max-queued-messages`: the same for every session,
/// so passed in rather than stored in each (every idle connection would pay for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_inflight: u32,
    max_queued: u32,
}

impl Limits {
    pub fn new(max_inflight: usize, max_queued: usize) -> Self {
        Limits {
            max_inflight: u32::try_from(max_inflight.max(1)).unwrap_or(u32::MAX),
            max_queued: u32::try_from(max_queued).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Default)]
pub struct Outbound {
    inflight: VecDeque<InFlight>,
    queue: VecDeque<Publish>,
    last_pkid: u16,
}

impl Outbound {
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Queues a message for the client. When the queue is full, the oldest queued QoS 0
    /// message makes room; when there is none, the new message is refused.
    pub fn enqueue(&mut self, publish: Publish, limits: Limits) -> Option<Dropped> {
        if self.queue.len() < limits.max_queued as usize {
            self.queue.push_back(publish);
            outbound_changed(0, 1);
            return None;
        }
        match self.queue.iter().position(|p| p.qos == QoS::AtMostOnce) {
            Some(index) => {
                let old = self.queue.remove(index)?;
                self.queue.push_back(publish);
                Some(Dropped::OldestQoS0 { topic: old.topic.to_string() })
            }
            None => Some(Dropped::Incoming { topic: publish.topic.to_string(), qos: publish.qos }),
        }
    }

    /// Removes queued QoS 0 messages: used when the client goes away, since only QoS 1 and 2
    /// messages are kept for an offline session.
    pub fn discard_queued_qos0(&mut self) -> usize {
        let before = self.queue.len();
        self.queue.retain(|p| p.qos != QoS::AtMostOnce);
        let discarded = before - self.queue.len();
        if discarded > 0 {
            outbound_changed(0, -(discarded as i64));
        }
        discarded
    }

    /// Takes the next queued message that may be written now, giving QoS 1/2 messages a packet
    /// identifier and a place in the in-flight window. Returns None when the queue is empty or
    /// the window is full (messages keep their order: a QoS 0 message never overtakes a waiting
    /// QoS 1/2 one).
    pub fn next_to_send(&mut self, limits: Limits) -> Option<Publish> {
        let front = self.queue.front()?;
        if front.qos == QoS::AtMostOnce {
            outbound_changed(0, -1);
            return self.queue.pop_front();
        }
        if self.inflight.len() >= limits.max_inflight as usize {
            return None;
        }
        let mut publish = self.queue.pop_front()?;
        publish.pkid = self.allocate_pkid();
        let stage = if publish.qos == QoS::AtLeastOnce { Awaiting::Ack } else { Awaiting::Received };
        self.inflight.push_back(InFlight { publish: publish.clone(), stage });
        outbound_changed(1, -1);
        Some(publish)
    }

    /// A PUBACK arrived: the QoS 1 flow of `pkid` is complete. Returns false for an unknown id.
    pub fn puback(&mut self, pkid: u16) -> bool {
        self.complete(pkid, Awaiting::Ack)
    }

    /// A PUBREC arrived: the message is now owned by the client, and a PUBREL answers it.
    /// Returns false for an unknown id (a PUBREL is still the right answer to a PUBREC).
    pub fn pubrec(&mut self, pkid: u16) -> bool {
        match self.inflight.iter_mut().find(|m| m.publish.pkid == pkid) {
            Some(m) if m.stage == Awaiting::Received || m.stage == Awaiting::Complete => {
                m.stage = Awaiting::Complete;
                true
            }
            _ => false,
        }
    }

    /// A PUBCOMP arrived: the QoS 2 flow of `pkid` is complete.
    pub fn pubcomp(&mut self, pkid: u16) -> bool {
        self.complete(pkid, Awaiting::Complete)
    }

    /// What to send again, in the original order, when a persistent session resumes: every
    /// unacknowledged PUBLISH with DUP set, and PUBREL for those already received
    /// [MQTT-4.4.0-1].
    pub fn resend(&self) -> impl Iterator<Item = Packet> + '_ {
        self.inflight.iter().map(|m| match m.stage {
            Awaiting::Ack | Awaiting::Received => {
                let mut publish = m.publish.clone();
                publish.dup = true;
                Packet::Publish(publish)
            }
            Awaiting::Complete => Packet::PubRel(PubRel { pkid: m.publish.pkid }),
        })
    }

    fn complete(&mut self, pkid: u16, stage: Awaiting) -> bool {
        match self.inflight.iter().position(|m| m.publish.pkid == pkid && m.stage == stage) {
            Some(index) => {
                self.inflight.remove(index);
                outbound_changed(-1, 0);
                true
            }
            None => false,
        }
    }

    /// Packet identifiers are taken in turn, skipping 0 and those still in flight
    /// [MQTT-2.3.1-2].
    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1).max(1);
            let candidate = self.last_pkid;
            if !self.inflight.iter().any(|m| m.publish.pkid == candidate) {
                return candidate;
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if !self.inflight.is_empty() || !self.queue.is_empty() {
            outbound_changed(-(self.inflight.len() as i64), -(self.queue.len() as i64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqtt_protocol::ByteString;
    use bytes::Bytes;

    fn msg(topic: &str, qos: QoS) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteString::from(topic),
            pkid: 0,
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn window_limits_qos1_and_keeps_order() {
        let limits = Limits::new(2, 10);
        let mut o = Outbound::default();
        for t in ["a", "b", "c"] {
            assert_eq!(o.enqueue(msg(t, QoS::AtLeastOnce), limits), None);
        }
        o.enqueue(msg("d", QoS::AtMostOnce), limits);
        let first = o.next_to_send(limits).unwrap();
        let second = o.next_to_send(limits).unwrap();
        assert_eq!((first.pkid, second.pkid), (1, 2));
        // Window full: neither the QoS 1 message nor the QoS 0 one behind it goes out.
        assert!(o.next_to_send(limits).is_none());
        assert!(o.puback(1));
        assert!(!o.puback(1));
        assert_eq!(o.next_to_send(limits).unwrap().topic, "c");
        assert_eq!(o.next_to_send(limits).unwrap().topic, "d");
        assert!(o.next_to_send(limits).is_none());
    }

    #[test]
    fn qos2_flow_and_resend() {
        let limits = Limits::new(10, 10);
        let mut o = Outbound::default();
        o.enqueue(msg("a", QoS::ExactlyOnce), limits);
        o.enqueue(msg("b", QoS::ExactlyOnce), limits);
        let a = o.next_to_send(limits).unwrap();
        let b = o.next_to_send(limits).unwrap();
        assert!(!o.pubcomp(a.pkid), "PUBCOMP before PUBREC completes nothing");
        assert!(o.pubrec(a.pkid));
        let resent: Vec<Packet> = o.resend().collect();
        assert_eq!(resent.len(), 2);
        assert_eq!(resent[0], Packet::PubRel(PubRel { pkid: a.pkid }));
        match &resent[1] {
            Packet::Publish(p) => assert!(p.dup && p.pkid == b.pkid),
            other => panic!("unexpected {other:?}"),
        }
        assert!(o.pubcomp(a.pkid));
        assert_eq!(o.inflight_len(), 1);
    }

    #[test]
    fn full_queue_drops_oldest_qos0_then_refuses() {
        let limits = Limits::new(1, 2);
        let mut o = Outbound::default();
        o.enqueue(msg("q0", QoS::AtMostOnce), limits);
        o.enqueue(msg("q1", QoS::AtLeastOnce), limits);
        assert_eq!(o.enqueue(msg("n1", QoS::AtLeastOnce), limits), Some(Dropped::OldestQoS0 { topic: "q0".into() }));
        assert_eq!(
            o.enqueue(msg("n2", QoS::ExactlyOnce), limits),
            Some(Dropped::Incoming { topic: "n2".into(), qos: QoS::ExactlyOnce })
        );
        assert_eq!(o.queued_len(), 2);
    }

    #[test]
    fn pkids_skip_zero_and_those_in_flight() {
        let limits = Limits::new(3, 10);
        let mut o = Outbound::default();
        o.last_pkid = u16::MAX - 1;
        for _ in 0..3 {
            o.enqueue(msg("t", QoS::AtLeastOnce), limits);
        }
        let ids: Vec<u16> = std::iter::from_fn(|| o.next_to_send(limits).map(|p| p.pkid)).collect();
        assert_eq!(ids, vec![u16::MAX, 1, 2]);
        assert!(o.puback(1));
        o.last_pkid = 0;
        o.enqueue(msg("t", QoS::AtLeastOnce), limits);
        assert_eq!(o.next_to_send(limits).unwrap().pkid, 1);
        o.enqueue(msg("t", QoS::AtLeastOnce), limits);
        assert!(o.next_to_send(limits).is_none(), "window of 3 is full");
    }

    #[test]
    fn gauges_follow_every_change_and_the_drop() {
        use crate::stats::local_outbound;
        let start = local_outbound();
        let moved = |o: &Outbound| (o.inflight_len() as i64, o.queued_len() as i64);
        let tallied = || {
            let now = local_outbound();
            (now.0 - start.0, now.1 - start.1)
        };
        let limits = Limits::new(2, 4);
        let mut o = Outbound::default();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtMostOnce, QoS::AtLeastOnce] {
            o.enqueue(msg("t", qos), limits);
        }
        o.enqueue(msg("over", QoS::AtLeastOnce), limits); // replaces the QoS 0 one
        o.enqueue(msg("refused", QoS::AtLeastOnce), limits);
        assert_eq!(tallied(), moved(&o));
        let a = o.next_to_send(limits).unwrap();
        let b = o.next_to_send(limits).unwrap();
        assert_eq!(tallied(), moved(&o));
        assert_eq!(tallied(), (2, 2));
        assert!(o.puback(a.pkid) && o.pubrec(b.pkid));
        assert_eq!(tallied(), (1, 2));
        o.enqueue(msg("q0", QoS::AtMostOnce), limits);
        o.next_to_send(limits);
        o.discard_queued_qos0();
        assert_eq!(tallied(), moved(&o));
        let handed_over = std::mem::take(&mut o);
        assert_eq!(tallied(), moved(&handed_over), "a move changes nothing");
        drop(handed_over);
        drop(o);
        assert_eq!(tallied(), (0, 0));
    }
}
