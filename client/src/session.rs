//! The client side of an MQTT session: what must survive a lost connection (and, with
//! `cleansession: false`, a `disconnect()` followed by a new `connect()`).
//!
//! Owned by the connection driver while it runs, handed back to the `MqttClient` when it ends.

use std::collections::{HashMap, VecDeque};

use amqtt_protocol::{Packet, Publish, QoS, Subscribe, SubscribeReturnCode, Unsubscribe};
use tokio::sync::oneshot;

use crate::{ClientError, Message};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// A QoS 1 or 2 PUBLISH sent and not yet fully acknowledged.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Order of sending, so that a reconnection re-sends in the original order.
    pub seq: u64,
    pub publish: Publish,
    /// QoS 2 only: PUBREC received and PUBREL sent; what is re-sent is then the PUBREL.
    pub released: bool,
    /// None when the caller is gone (its `publish` was cancelled, or the session outlived a
    /// `disconnect()`): the flow still completes, nobody hears of it.
    pub reply: Option<Reply<Message>>,
}

/// A SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement.
#[derive(Debug)]
pub(crate) enum Request {
    /// `reply` is None for the re-subscription the client makes on its own after reconnecting.
    Subscribe {
        seq: u64,
        packet: Subscribe,
        reply: Option<Reply<Vec<SubscribeReturnCode>>>,
    },
    Unsubscribe {
        seq: u64,
        packet: Unsubscribe,
        reply: Option<Reply<()>>,
    },
}

impl Request {
    fn seq(&self) -> u64 {
        match self {
            Request::Subscribe { seq, .. } | Request::Unsubscribe { seq, .. } => *seq,
        }
    }

    pub fn packet(&self) -> Packet {
        match self {
            Request::Subscribe { packet, .. } => Packet::Subscribe(packet.clone()),
            Request::Unsubscribe { packet, .. } => Packet::Unsubscribe(packet.clone()),
        }
    }
}

/// An application message received but not yet handed to `deliver_message`'s channel (it was
/// full), with the acknowledgement to send once it is.
#[derive(Debug)]
pub(crate) struct Undelivered {
    pub message: Message,
    pub ack: Option<Packet>,
}

#[derive(Debug, Default)]
pub(crate) struct SessionState {
    last_id: u16,
    seq: u64,
    /// QoS 1/2 publishes in flight, by packet id.
    pub outgoing: HashMap<u16, Outgoing>,
    /// QoS 1/2 publishes waiting for room in the in-flight window, oldest first.
    pub waiting: VecDeque<(Message, Reply<Message>)>,
    /// SUBSCRIBE / UNSUBSCRIBE in flight, by packet id.
    pub requests: HashMap<u16, Request>,
    /// Granted subscriptions and the QoS asked for, to subscribe again when a reconnection finds
    /// no session on the broker. Insertion order is kept so re-subscription replays it.
    pub subscriptions: Vec<(String, QoS)>,
    /// Incoming QoS 2 packet ids between PUBLISH and PUBREL, with whether our PUBREC went out:
    /// the message was delivered when first received, so a re-sent PUBLISH with the same id is
    /// a duplicate [MQTT-4.3.3-2] and must not be delivered again.
    pub incoming_qos2: HashMap<u16, bool>,
    /// Received while the delivery channel was full (back-pressure), oldest first.
    pub undelivered: VecDeque<Undelivered>,
}

impl SessionState {
    /// A packet identifier not used by any flow in progress [MQTT-2.3.1-2], never 0.
    pub fn next_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = self.last_id;
            if !self.outgoing.contains_key(&id) && !self.requests.contains_key(&id) {
                return id;
            }
        }
    }

    /// A new session for a clean-session connection, keeping only the messages received and
    /// not yet delivered: they are the application's now (the acks owed to the old session go).
    pub fn into_clean(mut self) -> SessionState {
        let mut undelivered = std::mem::take(&mut self.undelivered);
        for message in &mut undelivered {
            message.ack = None;
        }
        SessionState { undelivered, ..SessionState::default() }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Remembers a granted subscription, replacing an earlier one to the same filter
    /// [MQTT-3.8.4-3].
    pub fn remember_subscription(&mut self, filter: &str, qos: QoS) {
        match self.subscriptions.iter_mut().find(|(f, _)| f == filter) {
            Some(existing) => existing.1 = qos,
            None => self.subscriptions.push((filter.to_string(), qos)),
        }
    }

    pub fn forget_subscription(&mut self, filter: &str) {
        self.subscriptions.retain(|(f, _)| f != filter);
    }

    /// The packets to re-send on a new connection, in their original order: each in-flight
    /// PUBLISH with DUP set [MQTT-4.4.0-1] (its PUBREL once PUBREC came back [MQTT-4.3.3-1]),
    /// and the SUBSCRIBE / UNSUBSCRIBE still waiting for an answer.
    pub fn packets_to_resend(&mut self) -> Vec<Packet> {
        let mut flows: Vec<(u64, Packet)> = Vec::with_capacity(self.outgoing.len() + self.requests.len());
        for outgoing in self.outgoing.values_mut() {
            let packet = if outgoing.released {
                Packet::PubRel(amqtt_protocol::PubRel { pkid: outgoing.publish.pkid })
            } else {
                outgoing.publish.dup = true;
                Packet::Publish(outgoing.publish.clone())
            };
            flows.push((outgoing.seq, packet));
        }
        flows.extend(self.requests.values().map(|request| (request.seq(), request.packet())));
        flows.sort_by_key(|(seq, _)| *seq);
        flows.into_iter().map(|(_, packet)| packet).collect()
    }

    /// Fails every caller still waiting for an answer, keeping the flows themselves (they are
    /// re-sent if this session is resumed).
    pub fn fail_waiting_callers(&mut self, error: impl Fn() -> ClientError) {
        for outgoing in self.outgoing.values_mut() {
            if let Some(reply) = outgoing.reply.take() {
                let _ = reply.send(Err(error()));
            }
        }
        for (_, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(error()));
        }
        for request in self.requests.values_mut() {
            match request {
                Request::Subscribe { reply, .. } => {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Err(error()));
                    }
                }
                Request::Unsubscribe { reply, .. } => {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Err(error()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqtt_protocol::ByteString;
    use bytes::Bytes;

    fn publish(pkid: u16) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteString::from_static("t"),
            pkid,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn packet_ids_skip_those_in_use_and_zero() {
        let mut state = SessionState::default();
        assert_eq!(state.next_id(), 1);
        state.outgoing.insert(2, Outgoing { seq: 0, publish: publish(2), released: false, reply: None });
        assert_eq!(state.next_id(), 3);
        state.last_id = u16::MAX - 1;
        assert_eq!(state.next_id(), u16::MAX);
        assert_eq!(state.next_id(), 1);
        assert_eq!(state.next_id(), 3);
    }

    #[test]
    fn resend_in_order_with_dup_and_pubrel() {
        let mut state = SessionState::default();
        for (seq, pkid, released) in [(3, 10, false), (1, 20, true), (2, 30, false)] {
            state.outgoing.insert(pkid, Outgoing { seq, publish: publish(pkid), released, reply: None });
        }
        let packets = state.packets_to_resend();
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[0], Packet::PubRel(amqtt_protocol::PubRel { pkid: 20 }));
        assert!(matches!(&packets[1], Packet::Publish(p) if p.pkid == 30 && p.dup));
        assert!(matches!(&packets[2], Packet::Publish(p) if p.pkid == 10 && p.dup));
    }

    #[test]
    fn subscriptions_replace_and_forget() {
        let mut state = SessionState::default();
        state.remember_subscription("a", QoS::AtMostOnce);
        state.remember_subscription("b", QoS::AtLeastOnce);
        state.remember_subscription("a", QoS::ExactlyOnce);
        assert_eq!(state.subscriptions, vec![("a".into(), QoS::ExactlyOnce), ("b".into(), QoS::AtLeastOnce)]);
        state.forget_subscription("a");
        assert_eq!(state.subscriptions, vec![("b".into(), QoS::AtLeastOnce)]);
    }
}
