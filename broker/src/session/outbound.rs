//! Messages on their way from the broker to one client: the in-flight window of QoS 1/2
//! messages awaiting acknowledgement, and the bounded queue behind it.
//!
//! Pure state, no I/O, so that it can be handed from one connection to the next when a
//! persistent session is resumed, and tested on its own. Every change of its size is tallied
//! for the broker's in-flight and queued gauges (`crate::stats::outbound_changed`, a
//! thread-local addition), including when it is dropped, so the gauges follow it wherever it
//! moves.

use std::collections::VecDeque;

use amqtt_protocol::{ByteString, Packet, PubRel, Publish, QoS};

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
    /// Where persistence keeps it (0: not kept).
    seq: u64,
}

/// A message waiting for its turn.
#[derive(Debug, Clone)]
struct Queued {
    publish: Publish,
    /// Where persistence keeps it (0: not kept).
    seq: u64,
}

/// What happened to a message that did not fit in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The queue was full and this older QoS 0 message made room for the new one.
    OldestQoS0 { topic: ByteString },
    /// The queue was full of QoS 1/2 messages: the new message was refused.
    Incoming { topic: ByteString, qos: QoS, seq: u64 },
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
    queue: VecDeque<Queued>,
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
    /// `seq` is where persistence keeps the message (0: not kept).
    pub fn enqueue(&mut self, publish: Publish, seq: u64, limits: Limits) -> Option<Dropped> {
        if self.queue.len() < limits.max_queued as usize {
            self.queue.push_back(Queued { publish, seq });
            outbound_changed(0, 1);
            return None;
        }
        match self.queue.iter().position(|q| q.publish.qos == QoS::AtMostOnce) {
            Some(index) => {
                let old = self.queue.remove(index)?;
                self.queue.push_back(Queued { publish, seq });
                Some(Dropped::OldestQoS0 { topic: old.publish.topic })
            }
            None => Some(Dropped::Incoming { topic: publish.topic, qos: publish.qos, seq }),
        }
    }

    /// A persistent session's messages as an earlier run saved them (`seq` order): those
    /// sent go back in flight with their packet ids, the others in the queue.
    pub fn restore(messages: impl IntoIterator<Item = (u64, Publish, Option<(u16, bool)>)>) -> Outbound {
        let mut outbound = Outbound::default();
        for (seq, mut publish, sent) in messages {
            match sent {
                Some((pkid, released)) => {
                    publish.pkid = pkid;
                    let stage = match (publish.qos, released) {
                        (_, true) => Awaiting::Complete,
                        (QoS::ExactlyOnce, false) => Awaiting::Received,
                        _ => Awaiting::Ack,
                    };
                    outbound.last_pkid = outbound.last_pkid.max(pkid);
                    outbound.inflight.push_back(InFlight { publish, stage, seq });
                    outbound_changed(1, 0);
                }
                None => {
                    outbound.queue.push_back(Queued { publish, seq });
                    outbound_changed(0, 1);
                }
            }
        }
        outbound
    }

    /// Removes queued QoS 0 messages: used when the client goes away, since only QoS 1 and 2
    /// messages are kept for an offline session.
    pub fn discard_queued_qos0(&mut self) -> usize {
        let before = self.queue.len();
        self.queue.retain(|q| q.publish.qos != QoS::AtMostOnce);
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
    /// Returns the message with its persistence `seq` (0: not kept).
    pub fn next_to_send(&mut self, limits: Limits) -> Option<(Publish, u64)> {
        let front = self.queue.front()?;
        if front.publish.qos == QoS::AtMostOnce {
            outbound_changed(0, -1);
            return self.queue.pop_front().map(|q| (q.publish, q.seq));
        }
        if self.inflight.len() >= limits.max_inflight as usize {
            return None;
        }
        let Queued { mut publish, seq } = self.queue.pop_front()?;
        publish.pkid = self.allocate_pkid();
        let stage = if publish.qos == QoS::AtLeastOnce { Awaiting::Ack } else { Awaiting::Received };
        self.inflight.push_back(InFlight { publish: publish.clone(), stage, seq });
        outbound_changed(1, -1);
        Some((publish, seq))
    }

    /// A PUBACK arrived: the QoS 1 flow of `pkid` is complete. Returns the message's
    /// persistence seq, None for an unknown id.
    pub fn puback(&mut self, pkid: u16) -> Option<u64> {
        self.complete(pkid, Awaiting::Ack)
    }

    /// A PUBREC arrived: the message is now owned by the client, and a PUBREL answers it.
    /// Returns its persistence seq, None for an unknown id (a PUBREL is still the right
    /// answer to a PUBREC).
    pub fn pubrec(&mut self, pkid: u16) -> Option<u64> {
        match self.inflight.iter_mut().find(|m| m.publish.pkid == pkid) {
            Some(m) if m.stage == Awaiting::Received || m.stage == Awaiting::Complete => {
                m.stage = Awaiting::Complete;
                Some(m.seq)
            }
            _ => None,
        }
    }

    /// A PUBCOMP arrived: the QoS 2 flow of `pkid` is complete.
    pub fn pubcomp(&mut self, pkid: u16) -> Option<u64> {
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

    fn complete(&mut self, pkid: u16, stage: Awaiting) -> Option<u64> {
        let index = self.inflight.iter().position(|m| m.publish.pkid == pkid && m.stage == stage)?;
        let done = self.inflight.remove(index)?;
        outbound_changed(-1, 0);
        Some(done.seq)
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
            assert_eq!(o.enqueue(msg(t, QoS::AtLeastOnce), 0, limits), None);
        }
        o.enqueue(msg("d", QoS::AtMostOnce), 0, limits);
        let first = o.next_to_send(limits).unwrap().0;
        let second = o.next_to_send(limits).unwrap().0;
        assert_eq!((first.pkid, second.pkid), (1, 2));
        // Window full: neither the QoS 1 message nor the QoS 0 one behind it goes out.
        assert!(o.next_to_send(limits).is_none());
        assert!(o.puback(1).is_some());
        assert!(o.puback(1).is_none());
        assert_eq!(o.next_to_send(limits).unwrap().0.topic, "c");
        assert_eq!(o.next_to_send(limits).unwrap().0.topic, "d");
        assert!(o.next_to_send(limits).is_none());
    }

    #[test]
    fn qos2_flow_and_resend() {
        let limits = Limits::new(10, 10);
        let mut o = Outbound::default();
        o.enqueue(msg("a", QoS::ExactlyOnce), 0, limits);
        o.enqueue(msg("b", QoS::ExactlyOnce), 0, limits);
        let a = o.next_to_send(limits).unwrap().0;
        let b = o.next_to_send(limits).unwrap().0;
        assert!(o.pubcomp(a.pkid).is_none(), "PUBCOMP before PUBREC completes nothing");
        assert!(o.pubrec(a.pkid).is_some());
        let resent: Vec<Packet> = o.resend().collect();
        assert_eq!(resent.len(), 2);
        assert_eq!(resent[0], Packet::PubRel(PubRel { pkid: a.pkid }));
        match &resent[1] {
            Packet::Publish(p) => assert!(p.dup && p.pkid == b.pkid),
            other => panic!("unexpected {other:?}"),
        }
        assert!(o.pubcomp(a.pkid).is_some());
        assert_eq!(o.inflight_len(), 1);
    }

    #[test]
    fn full_queue_drops_oldest_qos0_then_refuses() {
        let limits = Limits::new(1, 2);
        let mut o = Outbound::default();
        o.enqueue(msg("q0", QoS::AtMostOnce), 0, limits);
        o.enqueue(msg("q1", QoS::AtLeastOnce), 0, limits);
        assert_eq!(o.enqueue(msg("n1", QoS::AtLeastOnce), 0, limits), Some(Dropped::OldestQoS0 { topic: "q0".into() }));
        assert_eq!(
            o.enqueue(msg("n2", QoS::ExactlyOnce), 0, limits),
            Some(Dropped::Incoming { topic: "n2".into(), qos: QoS::ExactlyOnce, seq: 0 })
        );
        assert_eq!(o.queued_len(), 2);
    }

    #[test]
    fn restored_messages_resume_where_they_were() {
        let limits = Limits::new(10, 10);
        let mut o = Outbound::restore([
            (7, msg("sent", QoS::ExactlyOnce), Some((40, false))),
            (8, msg("released", QoS::ExactlyOnce), Some((41, true))),
            (9, msg("queued", QoS::AtLeastOnce), None),
        ]);
        let resent: Vec<Packet> = o.resend().collect();
        assert!(matches!(&resent[0], Packet::Publish(p) if p.dup && p.pkid == 40));
        assert_eq!(resent[1], Packet::PubRel(PubRel { pkid: 41 }));
        let (queued, seq) = o.next_to_send(limits).unwrap();
        assert_eq!((queued.topic.as_ref(), queued.pkid, seq), ("queued", 42, 9), "ids go on after the restored ones");
        assert_eq!((o.pubrec(40), o.pubcomp(41)), (Some(7), Some(8)));
    }

    #[test]
    fn pkids_skip_zero_and_those_in_flight() {
        let limits = Limits::new(3, 10);
        let mut o = Outbound::default();
        o.last_pkid = u16::MAX - 1;
        for _ in 0..3 {
            o.enqueue(msg("t", QoS::AtLeastOnce), 0, limits);
        }
        let ids: Vec<u16> = std::iter::from_fn(|| o.next_to_send(limits).map(|(p, _)| p.pkid)).collect();
        assert_eq!(ids, vec![u16::MAX, 1, 2]);
        assert!(o.puback(1).is_some());
        o.last_pkid = 0;
        o.enqueue(msg("t", QoS::AtLeastOnce), 0, limits);
        assert_eq!(o.next_to_send(limits).unwrap().0.pkid, 1);
        o.enqueue(msg("t", QoS::AtLeastOnce), 0, limits);
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
            o.enqueue(msg("t", qos), 0, limits);
        }
        o.enqueue(msg("over", QoS::AtLeastOnce), 0, limits); // replaces the QoS 0 one
        o.enqueue(msg("refused", QoS::AtLeastOnce), 0, limits);
        assert_eq!(tallied(), moved(&o));
        let a = o.next_to_send(limits).unwrap().0;
        let b = o.next_to_send(limits).unwrap().0;
        assert_eq!(tallied(), moved(&o));
        assert_eq!(tallied(), (2, 2));
        assert!(o.puback(a.pkid).is_some() && o.pubrec(b.pkid).is_some());
        assert_eq!(tallied(), (1, 2));
        o.enqueue(msg("q0", QoS::AtMostOnce), 0, limits);
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
