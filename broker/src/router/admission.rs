//! Admission control: the router takes a publisher's messages (and so lets its session
//! acknowledge them) only while the subscribers they go to have room for them.
//!
//! A session's queue holds at most `max-queued-messages`; what does not fit is dropped. So that
//! a subscriber that is merely slower than its publishers loses nothing, the router keeps an
//! estimate of every client's backlog (messages it sent the session that the session has not yet
//! reported as written to its socket or dropped) and stops routing a publisher's batch at the
//! first message that would take a subscriber's backlog over its mark. The rest of the batch
//! waits here with its acknowledgements: the publisher's session holds them, so the client's
//! in-flight window, and the session's limit on batches at the router, stop it from sending
//! more. Nothing is routed past the mark, so the queue cannot overflow, whatever the number of
//! publishers or how late the subscriber's thread gets to its mailbox.
//!
//! A subscriber that makes no real progress for [`STALL_GRACE`] counts as stalled: routing to it
//! goes on and its own queue drops what does not fit (counted and logged), so one stuck client
//! cannot hold back everybody publishing to what it subscribed to. Real progress is the queue
//! going down by half a report step between two reports: while its publishers are held back,
//! a live client's queue can only shrink, while a stalled one's stays full (drops keep it so).
//! Writes alone would not do: the kernel's socket buffers take megabytes from a client that
//! reads nothing before its writes stop, and a client that acknowledges a QoS 1 message now and
//! then would hold everybody back for ever. An offline persistent session never holds anybody
//! back either.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::Addr;
use amqtt_protocol::Publish;

use crate::session::Session;

/// How long a full subscriber may hold its publishers without draining. Short, because every
/// publisher feeding it waits meanwhile.
pub(crate) const STALL_GRACE: Duration = Duration::from_millis(500);

/// The backlog levels, derived from `max-queued-messages`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    /// A backlog at or over this holds publishers back (0: never).
    high: u32,
    /// Messages a session lets go between two reports.
    pub(crate) step: u32,
}

impl Marks {
    pub(crate) fn new(max_queued_messages: usize) -> Marks {
        let max = u32::try_from(max_queued_messages).unwrap_or(u32::MAX);
        // A quarter of the queue stays free for what bypasses admission: wills, retained
        // messages sent on SUBSCRIBE, messages a session got back on takeover.
        Marks { high: max - max / 4, step: (max / 8).max(1) }
    }
}

/// A session's progress, as it reports it every `Marks::step` messages it lets go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Messages received from the router since the session registered (wrapping).
    pub received: u32,
    /// Of those and of any it took over, how many are still in its queue.
    pub queued: u32,
}

/// What the router knows of one client's backlog.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Messages sent to the session since it registered (wrapping, as `Progress::received`).
    sent: u32,
    /// The session's last report.
    reported_received: u32,
    reported_queued: u32,
    /// Since when (router clock, ms; 0: not) the backlog has been full without progress.
    waiting_since_ms: u32,
    /// Full for longer than [`STALL_GRACE`] without progress: routed to regardless, without
    /// reading the clock for every message, until a report shows progress.
    stalled: bool,
    /// A persistent session whose client is away: nobody waits for it.
    pub(crate) offline: bool,
}

impl Backlog {
    /// An upper bound of the session's queue plus its mailbox: the session reports late, never
    /// early, so this only errs on the side of holding back.
    fn estimate(&self) -> u32 {
        self.sent.wrapping_sub(self.reported_received).saturating_add(self.reported_queued)
    }

    pub(crate) fn sent(&mut self, messages: usize) {
        self.sent = self.sent.wrapping_add(messages as u32);
    }

    /// Whether one more message must wait, `pending` being those routed to the client but not
    /// sent yet. The first time it must, the wait for progress starts; `clock` is read only
    /// while the client is full and not yet known to be stalled.
    pub(crate) fn is_full(&mut self, pending: usize, marks: Marks, clock: &Clock) -> bool {
        if self.offline
            || self.stalled
            || marks.high == 0
            || self.estimate().saturating_add(pending as u32) < marks.high
        {
            return false;
        }
        let now = clock.now_ms();
        if self.waiting_since_ms == 0 {
            self.waiting_since_ms = now;
        }
        self.stalled = now.wrapping_sub(self.waiting_since_ms) >= STALL_GRACE.as_millis() as u32;
        !self.stalled
    }

    /// Takes a report. Returns whether publishers waiting for this client may try again.
    pub(crate) fn report(&mut self, progress: Progress, marks: Marks, clock: &Clock) -> bool {
        let drained = progress.queued.saturating_add((marks.step / 2).max(1)) <= self.reported_queued;
        self.reported_received = progress.received;
        self.reported_queued = progress.queued;
        if self.waiting_since_ms == 0 {
            return false;
        }
        if self.estimate() < marks.high {
            self.waiting_since_ms = 0;
            self.stalled = false;
            return true;
        }
        if drained {
            // Slow, not stalled: the wait starts again from now.
            self.waiting_since_ms = clock.now_ms();
            self.stalled = false;
        }
        false
    }

    /// A new connection took the client id over: its session starts counting from zero.
    pub(crate) fn restart(&mut self) {
        *self = Backlog::default();
    }
}

/// Milliseconds since the router started, never 0 (0 means "not waiting" in `Backlog`).
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock(Instant::now())
    }

    fn now_ms(&self) -> u32 {
        (self.0.elapsed().as_millis() as u32).max(1)
    }
}

/// The rest of a publisher's batch, waiting for room at a subscriber.
pub(crate) struct ParkedRoute {
    pub from: Addr<Session>,
    pub acks: u32,
    pub rest: std::vec::IntoIter<Publish>,
}

/// Parked batches in arrival order. A publisher's later batches wait behind its parked one, so
/// its messages keep their order; other publishers' batches go on unless they too meet a full
/// subscriber.
#[derive(Default)]
pub(crate) struct ParkedRoutes {
    routes: VecDeque<ParkedRoute>,
    per_publisher: HashMap<Addr<Session>, u32>,
}

impl ParkedRoutes {
    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub(crate) fn has(&self, publisher: &Addr<Session>) -> bool {
        !self.routes.is_empty() && self.per_publisher.contains_key(publisher)
    }

    pub(crate) fn push(&mut self, route: ParkedRoute) {
        *self.per_publisher.entry(route.from.clone()).or_default() += 1;
        self.routes.push_back(route);
    }

    /// Takes every parked route out, oldest first, for another try; those still blocked go
    /// back with `push`, in the same order.
    pub(crate) fn take_all(&mut self) -> VecDeque<ParkedRoute> {
        self.per_publisher.clear();
        std::mem::take(&mut self.routes)
    }
}
