//! Broker-wide counters, shared by every actor through an `Arc` and updated with relaxed
//! atomics: cheap enough for the hot path, read by `$SYS` reporting and by tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    clients_connected: AtomicUsize,
    connections_refused: AtomicU64,
    messages_dropped: AtomicU64,
    protocol_errors: AtomicU64,
    publisher_pauses: AtomicU64,
    retained_messages: AtomicUsize,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Clients with an accepted CONNECT and an open connection.
    pub clients_connected: usize,
    /// Connections closed at accept because a listener's `max-connections` was reached.
    pub connections_refused: u64,
    /// Messages to clients dropped because a session's queue was full.
    pub messages_dropped: u64,
    /// Connections closed for malformed input or a protocol violation.
    pub protocol_errors: u64,
    /// Times a publisher was paused because a subscriber of its messages fell behind.
    pub publisher_pauses: u64,
    pub retained_messages: usize,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            clients_connected: self.clients_connected.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            messages_dropped: self.messages_dropped.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            publisher_pauses: self.publisher_pauses.load(Relaxed),
            retained_messages: self.retained_messages.load(Relaxed),
        }
    }

    pub(crate) fn client_connected(&self) {
        self.clients_connected.fetch_add(1, Relaxed);
    }

    pub(crate) fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn message_dropped(&self) {
        self.messages_dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn publisher_paused(&self) {
        self.publisher_pauses.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_retained(&self, count: usize) {
        self.retained_messages.store(count, Relaxed);
    }
}
