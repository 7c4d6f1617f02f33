//! Keep-alive and connect deadlines of all the sessions of one worker thread, checked by one
//! timer per thread instead of one timer per connection.
//!
//! A timer per session costs every idle connection a boxed timer entry (some 150 bytes), and
//! every new connection a registration in tokio's timer wheel and its cancellation; here a
//! session costs one weak address in a bucket. Deadlines are rounded up to the next tick, so a
//! silent client is disconnected at most one tick after 1.5 times its keep-alive, and a client
//! that does not send CONNECT at most one tick after `connect-timeout`.
//!
//! A session that closes leaves its entry behind until its deadline, which can be 1.5 times a
//! keep-alive of 18 hours, and a dead entry pins the closed session's mailbox allocation. So
//! that clients connecting and closing in a loop cannot make the broker's memory grow for that
//! long, the wheel sweeps dead entries out whenever it has doubled in size since the last
//! sweep: it stays within twice the live sessions, at an amortised constant cost per entry.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::WeakAddr;

use super::Session;

/// Resolution of the deadlines.
const TICK: Duration = Duration::from_millis(250);
/// Entries below which the wheel is never swept.
const MIN_SWEEP: usize = 1024;

/// Which deadline of a session has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `connect-timeout` after the connection was accepted: closed unless CONNECT was accepted.
    Connect,
    /// 1.5 times the keep-alive after the client was last heard from, as of when it was set:
    /// the session checks whether it heard from its client since, and disconnects it or asks to
    /// be watched again.
    KeepAlive,
}

/// Sent to a session when one of its deadlines has come.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadlineReached(pub Deadline);

struct Wheel {
    origin: Instant,
    /// Sessions by the tick at which they are due.
    due: BTreeMap<u64, Vec<(WeakAddr<Session>, Deadline)>>,
    /// Entries in `due`, and the count at which dead ones are swept out next.
    entries: usize,
    sweep_at: usize,
}

impl Wheel {
    /// Drops the entries of sessions that have stopped.
    fn sweep(&mut self) {
        self.due.retain(|_, sessions| {
            sessions.retain(|(session, _)| session.upgrade().is_some_and(|session| session.connected()));
            !sessions.is_empty()
        });
        self.entries = self.due.values().map(Vec::len).sum();
        self.sweep_at = (self.entries * 2).max(MIN_SWEEP);
    }
}

thread_local! {
    static WHEEL: RefCell<Option<Wheel>> = const { RefCell::new(None) };
}

/// Sends `session` a [`DeadlineReached`] at (or one tick after) `at`.
pub fn watch(session: WeakAddr<Session>, deadline: Deadline, at: Instant) {
    WHEEL.with(|wheel| {
        let mut wheel = wheel.borrow_mut();
        let wheel = wheel.get_or_insert_with(|| {
            // The first session of this thread to need it starts the thread's ticker.
            actix_rt::spawn(tick_forever());
            Wheel { origin: Instant::now(), due: BTreeMap::new(), entries: 0, sweep_at: MIN_SWEEP }
        });
        let tick = at.saturating_duration_since(wheel.origin).as_nanos().div_ceil(TICK.as_nanos()) as u64;
        wheel.due.entry(tick).or_default().push((session, deadline));
        wheel.entries += 1;
        if wheel.entries >= wheel.sweep_at {
            wheel.sweep();
        }
    });
}

async fn tick_forever() {
    let mut interval = actix_rt::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for (session, deadline) in due_now() {
            if let Some(session) = session.upgrade() {
                session.do_send(DeadlineReached(deadline));
            }
        }
    }
}

/// Takes the sessions whose deadline has passed.
fn due_now() -> Vec<(WeakAddr<Session>, Deadline)> {
    WHEEL.with(|wheel| {
        let mut wheel = wheel.borrow_mut();
        let Some(wheel) = wheel.as_mut() else { return Vec::new() };
        let now = wheel.origin.elapsed().as_nanos() / TICK.as_nanos();
        let later = wheel.due.split_off(&(now as u64 + 1));
        let due: Vec<_> = std::mem::replace(&mut wheel.due, later).into_values().flatten().collect();
        wheel.entries = wheel.entries.saturating_sub(due.len());
        due
    })
}
