//! Broker-wide counters, shared by every actor through an `Arc`, read by `$SYS` reporting
//! (through [`Stats::broker_stats`]) and by tests (through [`Stats::snapshot`]).
//!
//! Nothing here is updated once per message. Per-message figures (bytes, packets, PUBLISH
//! packets, in-flight and queued messages) are first tallied in plain thread-local cells of the
//! worker thread that handles them, which costs no more than an addition; a session adds its
//! thread's tally to the shared atomics once per flush and when its connection or actor ends
//! ([`Stats::publish_local`]). Since every handler that changes a figure ends with one of
//! those, a figure is exact as soon as the handler is done, and never counts anything twice.
//! Events that happen once per connection or once per packet (connected, disconnected, parked,
//! a limit that closes a connection or refuses a SUBSCRIBE's filters) update the shared atomics
//! directly; the router, one actor, stores the totals it keeps (retained messages,
//! subscriptions). Messages dropped from full queues can come at the rate of a flood, so they are
//! tallied per thread like the per-message figures.
//!
//! The in-flight and queued gauges can read negative for a moment (a message queued on one
//! thread and acknowledged on another after a takeover, each tally published at its own pace);
//! readers see 0 then.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use amqtt_plugin_api::BrokerStats;

#[derive(Debug)]
pub struct Stats {
    started_at: SystemTime,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    packets_received: AtomicU64,
    packets_sent: AtomicU64,
    publish_received: AtomicU64,
    publish_sent: AtomicU64,
    clients_connected: AtomicUsize,
    clients_maximum: AtomicUsize,
    sessions_parked: AtomicUsize,
    inflight_in: AtomicI64,
    inflight_out: AtomicI64,
    queued: AtomicI64,
    subscriptions: AtomicUsize,
    connections_refused: AtomicU64,
    tls_handshake_failures: AtomicU64,
    messages_dropped: AtomicU64,
    protocol_errors: AtomicU64,
    publisher_pauses: AtomicU64,
    retained_messages: AtomicUsize,
    logins_failed: AtomicU64,
    logins_rate_limited: AtomicU64,
    packets_too_large: AtomicU64,
    connect_timeouts: AtomicU64,
    subscriptions_refused: AtomicU64,
    topics_too_long: AtomicU64,
    topic_levels_exceeded: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started_at: SystemTime::now(),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            publish_received: AtomicU64::new(0),
            publish_sent: AtomicU64::new(0),
            clients_connected: AtomicUsize::new(0),
            clients_maximum: AtomicUsize::new(0),
            sessions_parked: AtomicUsize::new(0),
            inflight_in: AtomicI64::new(0),
            inflight_out: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            subscriptions: AtomicUsize::new(0),
            connections_refused: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            messages_dropped: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            publisher_pauses: AtomicU64::new(0),
            retained_messages: AtomicUsize::new(0),
            logins_failed: AtomicU64::new(0),
            logins_rate_limited: AtomicU64::new(0),
            packets_too_large: AtomicU64::new(0),
            connect_timeouts: AtomicU64::new(0),
            subscriptions_refused: AtomicU64::new(0),
            topics_too_long: AtomicU64::new(0),
            topic_levels_exceeded: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Clients with an accepted CONNECT and an open connection.
    pub clients_connected: usize,
    /// Most clients connected at once since the start.
    pub clients_maximum: usize,
    /// Persistent sessions (clean session 0) whose client is not connected.
    pub clients_disconnected: usize,
    /// Connections closed at accept because a listener's `max-connections` was reached.
    pub connections_refused: u64,
    /// Connections dropped because their TLS handshake failed or did not finish within
    /// `connect-timeout` (a plaintext client on a TLS port, an unknown CA, an expired or missing
    /// client certificate, a port probe).
    pub tls_handshake_failures: u64,
    /// Messages to clients dropped because a session's queue was full.
    pub messages_dropped: u64,
    /// Connections closed for malformed input or a protocol violation (a packet over
    /// `max-packet-size` included: see `packets_too_large`).
    pub protocol_errors: u64,
    /// Connections closed because a packet's fixed header announced more than `max-packet-size`.
    pub packets_too_large: u64,
    /// Connections closed because no CONNECT (on a `ws` listener: no upgrade request) came within
    /// `connect-timeout`. A TLS handshake that does not finish in time counts in
    /// `tls_handshake_failures` instead.
    pub connect_timeouts: u64,
    /// Filters of SUBSCRIBE packets answered 0x80 because the client already had
    /// `max-subscriptions-per-client` subscriptions.
    pub subscriptions_refused: u64,
    /// Topics longer than `max-topic-length` bytes: a PUBLISH or a will topic (the connection is
    /// closed), or a SUBSCRIBE filter (answered 0x80).
    pub topics_too_long: u64,
    /// Topics of more than `max-topic-levels` levels, counted like `topics_too_long`.
    pub topic_levels_exceeded: u64,
    /// Times a publisher was paused because a subscriber of its messages fell behind.
    pub publisher_pauses: u64,
    /// CONNECTs refused by the auth chain (wrong password, unknown user, anonymous not allowed).
    pub logins_failed: u64,
    /// CONNECTs refused unchecked because their address had too many failed logins of late
    /// (`auth.max-failed-logins`); not counted in `logins_failed`.
    pub logins_rate_limited: u64,
    pub retained_messages: usize,
    /// Subscriptions of every client, connected or not (one per client and filter).
    pub subscriptions: usize,
    /// Bytes read from and written to clients.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// MQTT packets of any type received and sent.
    pub packets_received: u64,
    pub packets_sent: u64,
    /// PUBLISH packets received and sent.
    pub publish_received: u64,
    pub publish_sent: u64,
    /// QoS 2 messages received whose PUBREL has not come yet.
    pub inflight_in: u64,
    /// QoS 1 and 2 messages sent to clients and not yet acknowledged.
    pub inflight_out: u64,
    /// Messages waiting in session queues (offline clients, or behind the in-flight window).
    pub queued: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            clients_connected: self.clients_connected.load(Relaxed),
            clients_maximum: self.clients_maximum.load(Relaxed),
            clients_disconnected: self.sessions_parked.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            messages_dropped: self.messages_dropped.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            publisher_pauses: self.publisher_pauses.load(Relaxed),
            logins_failed: self.logins_failed.load(Relaxed),
            logins_rate_limited: self.logins_rate_limited.load(Relaxed),
            retained_messages: self.retained_messages.load(Relaxed),
            packets_too_large: self.packets_too_large.load(Relaxed),
            connect_timeouts: self.connect_timeouts.load(Relaxed),
            subscriptions_refused: self.subscriptions_refused.load(Relaxed),
            topics_too_long: self.topics_too_long.load(Relaxed),
            topic_levels_exceeded: self.topic_levels_exceeded.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            packets_received: self.packets_received.load(Relaxed),
            packets_sent: self.packets_sent.load(Relaxed),
            publish_received: self.publish_received.load(Relaxed),
            publish_sent: self.publish_sent.load(Relaxed),
            inflight_in: gauge(&self.inflight_in),
            inflight_out: gauge(&self.inflight_out),
            queued: gauge(&self.queued),
        }
    }

    /// The counters as plugins (`$SYS`) see them.
    pub fn broker_stats(&self) -> BrokerStats {
        let s = self.snapshot();
        let connected = s.clients_connected as u64;
        let disconnected = s.clients_disconnected as u64;
        BrokerStats {
            started_at: self.started_at,
            bytes_received: s.bytes_received,
            bytes_sent: s.bytes_sent,
            packets_received: s.packets_received,
            packets_sent: s.packets_sent,
            publish_received: s.publish_received,
            publish_sent: s.publish_sent,
            clients_connected: connected,
            clients_disconnected: disconnected,
            // Read after `connected`: a connection in between must not make the maximum look
            // smaller than the count.
            clients_maximum: (s.clients_maximum as u64).max(connected),
            clients_total: connected + disconnected,
            inflight_in: s.inflight_in,
            inflight_out: s.inflight_out,
            inflight_stored: s.queued,
            retained_messages: s.retained_messages as u64,
            subscriptions: s.subscriptions as u64,
            messages_dropped: s.messages_dropped,
            packets_too_large: s.packets_too_large,
            connect_timeouts: s.connect_timeouts,
            subscriptions_refused: s.subscriptions_refused,
            topics_too_long: s.topics_too_long,
            topic_levels_exceeded: s.topic_levels_exceeded,
        }
    }

    /// Adds what this thread has tallied since the last call to the shared counters: a few
    /// atomic additions when there is something, none otherwise. Called by sessions once per
    /// flush and when a connection or a session ends.
    pub(crate) fn publish_local(&self) {
        LOCAL.with(|local| {
            if !local.dirty.replace(false) {
                return;
            }
            add(&self.bytes_received, local.bytes_received.take());
            add(&self.packets_received, local.packets_received.take());
            add(&self.publish_received, local.publish_received.take());
            add(&self.bytes_sent, local.bytes_sent.take());
            add(&self.packets_sent, local.packets_sent.take());
            add(&self.publish_sent, local.publish_sent.take());
            add(&self.messages_dropped, local.dropped.take());
            add_signed(&self.inflight_in, local.inflight_in.take());
            add_signed(&self.inflight_out, local.inflight_out.take());
            add_signed(&self.queued, local.queued.take());
        });
    }

    /// A CONNECT was accepted (CONNACK 0 written); once per connection.
    pub(crate) fn client_connected(&self) {
        let connected = self.clients_connected.fetch_add(1, Relaxed) + 1;
        self.clients_maximum.fetch_max(connected, Relaxed);
    }

    /// A connection counted by `client_connected` ended; once per such connection.
    pub(crate) fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Relaxed);
    }

    /// A persistent session lost its connection and waits for its client.
    pub(crate) fn session_parked(&self) {
        self.sessions_parked.fetch_add(1, Relaxed);
    }

    /// A session counted by `session_parked` was taken over by a new connection (its client
    /// came back, or another connection claimed its client id).
    pub(crate) fn session_unparked(&self) {
        self.sessions_parked.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    /// A connection is closed for a packet over `max-packet-size`; once per connection.
    pub(crate) fn packet_too_large(&self) {
        self.packets_too_large.fetch_add(1, Relaxed);
    }

    /// A connection is closed for not sending CONNECT in time; once per connection.
    pub(crate) fn connect_timed_out(&self) {
        self.connect_timeouts.fetch_add(1, Relaxed);
    }

    /// `count` filters of one SUBSCRIBE refused by `max-subscriptions-per-client`.
    pub(crate) fn subscriptions_refused(&self, count: u64) {
        add(&self.subscriptions_refused, count);
    }

    /// `count` topics of one packet over `max-topic-length`.
    pub(crate) fn topics_too_long(&self, count: u64) {
        add(&self.topics_too_long, count);
    }

    /// `count` topics of one packet over `max-topic-levels`.
    pub(crate) fn topic_levels_exceeded(&self, count: u64) {
        add(&self.topic_levels_exceeded, count);
    }

    /// The auth chain refused a CONNECT; once per connection.
    pub(crate) fn login_failed(&self) {
        self.logins_failed.fetch_add(1, Relaxed);
    }

    /// A CONNECT was refused by failed-login rate limiting; once per connection.
    pub(crate) fn login_rate_limited(&self) {
        self.logins_rate_limited.fetch_add(1, Relaxed);
    }

    pub(crate) fn publisher_paused(&self) {
        self.publisher_pauses.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_retained(&self, count: usize) {
        self.retained_messages.store(count, Relaxed);
    }

    pub(crate) fn set_subscriptions(&self, count: usize) {
        self.subscriptions.store(count, Relaxed);
    }
}

fn gauge(value: &AtomicI64) -> u64 {
    value.load(Relaxed).max(0).unsigned_abs()
}

fn add(counter: &AtomicU64, value: u64) {
    if value != 0 {
        counter.fetch_add(value, Relaxed);
    }
}

fn add_signed(gauge: &AtomicI64, delta: i64) {
    if delta != 0 {
        gauge.fetch_add(delta, Relaxed);
    }
}

/// This thread's figures not yet added to the shared counters.
struct Local {
    /// Whether any cell may be non-zero, so that publishing nothing costs one check.
    dirty: Cell<bool>,
    bytes_received: Cell<u64>,
    packets_received: Cell<u64>,
    publish_received: Cell<u64>,
    bytes_sent: Cell<u64>,
    packets_sent: Cell<u64>,
    publish_sent: Cell<u64>,
    dropped: Cell<u64>,
    inflight_in: Cell<i64>,
    inflight_out: Cell<i64>,
    queued: Cell<i64>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            dirty: Cell::new(false),
            bytes_received: Cell::new(0),
            packets_received: Cell::new(0),
            publish_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            packets_sent: Cell::new(0),
            publish_sent: Cell::new(0),
            dropped: Cell::new(0),
            inflight_in: Cell::new(0),
            inflight_out: Cell::new(0),
            queued: Cell::new(0),
        }
    };
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

fn bump_signed(cell: &Cell<i64>, by: i64) {
    cell.set(cell.get().wrapping_add(by));
}

/// Whole packets read from a client: `bytes` in `packets` packets, `publishes` of them PUBLISH.
pub(crate) fn count_received(bytes: usize, packets: usize, publishes: usize) {
    LOCAL.with(|local| {
        local.dirty.set(true);
        bump(&local.bytes_received, bytes as u64);
        bump(&local.packets_received, packets as u64);
        bump(&local.publish_received, publishes as u64);
    });
}

/// One packet of `bytes` encoded for a client.
pub(crate) fn count_sent(bytes: usize, publish: bool) {
    LOCAL.with(|local| {
        local.dirty.set(true);
        bump(&local.bytes_sent, bytes as u64);
        bump(&local.packets_sent, 1);
        bump(&local.publish_sent, u64::from(publish));
    });
}

/// A message for a client dropped because its queue was full (`max-queued-messages`).
pub(crate) fn count_dropped() {
    LOCAL.with(|local| {
        local.dirty.set(true);
        bump(&local.dropped, 1);
    });
}

/// QoS 2 messages received and awaiting PUBREL: `delta` more (or fewer).
pub(crate) fn inflight_in_changed(delta: i64) {
    LOCAL.with(|local| {
        local.dirty.set(true);
        bump_signed(&local.inflight_in, delta);
    });
}

/// Messages sent and unacknowledged (`inflight`) and queued for clients (`queued`) changed by
/// these amounts.
pub(crate) fn outbound_changed(inflight: i64, queued: i64) {
    LOCAL.with(|local| {
        local.dirty.set(true);
        bump_signed(&local.inflight_out, inflight);
        bump_signed(&local.queued, queued);
    });
}

/// This thread's unpublished in-flight-out and queued tallies, for tests of what tallies them.
#[cfg(test)]
pub(crate) fn local_outbound() -> (i64, i64) {
    LOCAL.with(|local| (local.inflight_out.get(), local.queued.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_tallies_reach_the_shared_counters_once() {
        let stats = Stats::default();
        count_received(100, 3, 2);
        count_sent(40, true);
        count_sent(4, false);
        inflight_in_changed(2);
        inflight_in_changed(-1);
        outbound_changed(3, 5);
        outbound_changed(-1, -2);
        count_dropped();
        count_dropped();
        assert_eq!(stats.snapshot(), StatsSnapshot::default(), "nothing shared before publishing");
        stats.publish_local();
        stats.publish_local();
        let s = stats.snapshot();
        assert_eq!((s.bytes_received, s.packets_received, s.publish_received), (100, 3, 2));
        assert_eq!((s.bytes_sent, s.packets_sent, s.publish_sent), (44, 2, 1));
        assert_eq!((s.inflight_in, s.inflight_out, s.queued), (1, 2, 3));
        assert_eq!(s.messages_dropped, 2);
    }

    #[test]
    fn tallies_of_other_threads_are_theirs_to_publish() {
        let stats = std::sync::Arc::new(Stats::default());
        let other = stats.clone();
        std::thread::spawn(move || {
            count_received(10, 1, 1);
            other.publish_local();
            // Removed on this thread after being added on the other: a moment below zero.
            outbound_changed(0, -1);
            other.publish_local();
        })
        .join()
        .unwrap();
        assert_eq!(stats.snapshot().queued, 0, "a negative gauge reads 0");
        outbound_changed(0, 1);
        stats.publish_local();
        assert_eq!(stats.snapshot().queued, 0);
        outbound_changed(0, 1);
        stats.publish_local();
        assert_eq!((stats.snapshot().packets_received, stats.snapshot().queued), (1, 1));
    }

    #[test]
    fn maximum_and_parked_clients() {
        let stats = Stats::default();
        for _ in 0..3 {
            stats.client_connected();
        }
        stats.client_disconnected();
        stats.client_disconnected();
        stats.client_connected();
        stats.session_parked();
        stats.session_parked();
        stats.session_unparked();
        let s = stats.broker_stats();
        assert_eq!((s.clients_connected, s.clients_maximum, s.clients_disconnected, s.clients_total), (2, 3, 1, 3));
        assert!(s.started_at <= SystemTime::now());
    }
}
