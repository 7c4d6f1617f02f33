//! What event plugins are told, and what they can do with the broker in return.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::ClientInfo;

/// Something that happened in the broker.
#[derive(Clone)]
#[non_exhaustive]
pub enum Event {
    /// The listeners are open. `broker` lets the plugin publish and read statistics for as
    /// long as the broker runs; keep it.
    BrokerStarted {
        broker: Arc<dyn BrokerHandle>,
    },
    /// The broker is stopping; publishing now may not reach anyone.
    BrokerStopping,
    /// A client's CONNECT was accepted.
    ClientConnected {
        client: Arc<ClientInfo>,
    },
    /// An accepted client's connection ended, for whatever reason.
    ClientDisconnected {
        client: Arc<ClientInfo>,
    },
    /// A client subscribed to `filter` and was granted `qos`.
    Subscribed {
        client_id: String,
        filter: String,
        qos: u8,
    },
    Unsubscribed {
        client_id: String,
        filter: String,
    },
    /// A client published a message, and the broker accepted it for routing.
    MessageReceived {
        client_id: String,
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
    },
    /// A retained message was stored for `topic`, replacing any earlier one.
    RetainedSet {
        topic: String,
        payload: Bytes,
    },
    /// The retained message of `topic` was cleared (by a zero-length retained PUBLISH).
    RetainedCleared {
        topic: String,
    },
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::BrokerStarted { .. } => f.write_str("BrokerStarted"),
            Event::BrokerStopping => f.write_str("BrokerStopping"),
            Event::ClientConnected { client } => write!(f, "ClientConnected({})", client.client_id),
            Event::ClientDisconnected { client } => write!(f, "ClientDisconnected({})", client.client_id),
            Event::Subscribed { client_id, filter, qos } => write!(f, "Subscribed({client_id}, {filter}, {qos})"),
            Event::Unsubscribed { client_id, filter } => write!(f, "Unsubscribed({client_id}, {filter})"),
            Event::MessageReceived { client_id, topic, payload, .. } => {
                write!(f, "MessageReceived({client_id}, {topic}, {} bytes)", payload.len())
            }
            Event::RetainedSet { topic, payload } => write!(f, "RetainedSet({topic}, {} bytes)", payload.len()),
            Event::RetainedCleared { topic } => write!(f, "RetainedCleared({topic})"),
        }
    }
}

/// The kinds of events a plugin wants besides `BrokerStarted` and `BrokerStopping`, which
/// every event plugin gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interests {
    /// `ClientConnected`, `ClientDisconnected`.
    pub clients: bool,
    /// `Subscribed`, `Unsubscribed`.
    pub subscriptions: bool,
    /// `MessageReceived`: one event per message, so ask for it only if you need it.
    pub messages: bool,
    /// `RetainedSet`, `RetainedCleared`.
    pub retained: bool,
}

impl Interests {
    /// Only the broker's start and stop.
    pub const NONE: Interests = Interests { clients: false, subscriptions: false, messages: false, retained: false };
    pub const ALL: Interests = Interests { clients: true, subscriptions: true, messages: true, retained: true };

    pub fn wants(&self, event: &Event) -> bool {
        match event {
            Event::BrokerStarted { .. } | Event::BrokerStopping => true,
            Event::ClientConnected { .. } | Event::ClientDisconnected { .. } => self.clients,
            Event::Subscribed { .. } | Event::Unsubscribed { .. } => self.subscriptions,
            Event::MessageReceived { .. } => self.messages,
            Event::RetainedSet { .. } | Event::RetainedCleared { .. } => self.retained,
        }
    }

    /// What either wants.
    pub fn union(self, other: Interests) -> Interests {
        Interests {
            clients: self.clients || other.clients,
            subscriptions: self.subscriptions || other.subscriptions,
            messages: self.messages || other.messages,
            retained: self.retained || other.retained,
        }
    }
}

/// What a plugin can do with the running broker.
pub trait BrokerHandle: Send + Sync + 'static {
    /// Publishes a message as the broker itself (for example to a `$SYS/...` topic). `qos` is
    /// 0, 1 or 2 (anything higher is taken as 2).
    fn publish(&self, topic: &str, payload: Bytes, qos: u8, retain: bool);

    /// The broker's counters now.
    fn stats(&self) -> BrokerStats;

    /// The broker's version, e.g. "amqtt-rs 0.1.0".
    fn version(&self) -> String;
}

/// The broker's counters, as `$SYS/broker/...` reports them. Counts since start-up unless said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStats {
    pub started_at: SystemTime,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// MQTT packets of any type.
    pub packets_received: u64,
    pub packets_sent: u64,
    /// PUBLISH packets.
    pub publish_received: u64,
    pub publish_sent: u64,
    /// Clients connected now.
    pub clients_connected: u64,
    /// Persistent sessions (clean session 0) whose client is not connected now.
    pub clients_disconnected: u64,
    /// Most clients connected at once.
    pub clients_maximum: u64,
    /// Connected clients plus disconnected persistent sessions, now.
    pub clients_total: u64,
    /// QoS 2 messages received whose PUBREL has not come yet, now.
    pub inflight_in: u64,
    /// Messages sent to clients and not yet acknowledged, now.
    pub inflight_out: u64,
    /// Messages queued for clients (offline, or behind their in-flight window), now.
    pub inflight_stored: u64,
    pub retained_messages: u64,
    pub subscriptions: u64,
    /// Messages to clients dropped because a client's queue was full (`max-queued-messages`).
    pub messages_dropped: u64,
    /// Connections closed for a packet over `max-packet-size`.
    pub packets_too_large: u64,
    /// Connections closed for not sending CONNECT within `connect-timeout`.
    pub connect_timeouts: u64,
    /// SUBSCRIBE filters refused by `max-subscriptions-per-client`.
    pub subscriptions_refused: u64,
    /// Topics (PUBLISH, will, SUBSCRIBE filter) over `max-topic-length`.
    pub topics_too_long: u64,
    /// Topics over `max-topic-levels`.
    pub topic_levels_exceeded: u64,
}
