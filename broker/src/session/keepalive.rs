//! Keep-alive deadlines of all the sessions of one worker thread, checked by one timer per
//! thread instead of one timer per connection.
//!
//! A timer per session costs every idle connection a boxed timer entry (some 150 bytes); here a
//! session costs one weak address in a bucket. Deadlines are rounded up to the next tick, so a
//! silent client is disconnected at most one tick after 1.5 times its keep-alive.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::WeakAddr;

use super::Session;

/// Resolution of the deadlines.
const TICK: Duration = Duration::from_millis(250);

/// Sent to a session when its keep-alive deadline has come; the session checks whether it heard
/// from its client since, and disconnects it or asks to be watched again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeepAliveCheck;

struct Wheel {
    origin: Instant,
    /// Sessions by the tick at which they are due.
    due: BTreeMap<u64, Vec<WeakAddr<Session>>>,
}

thread_local! {
    static WHEEL: RefCell<Option<Wheel>> = const { RefCell::new(None) };
}

/// Sends `session` a [`KeepAliveCheck`] at (or one tick after) `deadline`.
pub fn watch(session: WeakAddr<Session>, deadline: Instant) {
    WHEEL.with(|wheel| {
        let mut wheel = wheel.borrow_mut();
        let wheel = wheel.get_or_insert_with(|| {
            // The first session of this thread to need it starts the thread's ticker.
            actix_rt::spawn(tick_forever());
            Wheel { origin: Instant::now(), due: BTreeMap::new() }
        });
        let tick = deadline.saturating_duration_since(wheel.origin).as_nanos().div_ceil(TICK.as_nanos()) as u64;
        wheel.due.entry(tick).or_default().push(session);
    });
}

async fn tick_forever() {
    let mut interval = actix_rt::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for session in due_now() {
            if let Some(session) = session.upgrade() {
                session.do_send(KeepAliveCheck);
            }
        }
    }
}

/// Takes the sessions whose deadline has passed.
fn due_now() -> Vec<WeakAddr<Session>> {
    WHEEL.with(|wheel| {
        let mut wheel = wheel.borrow_mut();
        let Some(wheel) = wheel.as_mut() else { return Vec::new() };
        let now = wheel.origin.elapsed().as_nanos() / TICK.as_nanos();
        let later = wheel.due.split_off(&(now as u64 + 1));
        std::mem::replace(&mut wheel.due, later).into_values().flatten().collect()
    })
}
