//! The router's part in the broker's graceful shutdown.
//!
//! Once the listeners are closed, the broker sends the router a [`Shutdown`]. From then on
//! nothing is routed: a batch that comes later, or that waits for room at a subscriber (see
//! `admission`), is answered without acknowledgements, so its publisher acknowledges none of it
//! and its client sends it again to the next broker. Every session is then told to drain. A
//! session's mailbox is in order, so each gets its `Drain` after every delivery routed before:
//! what a publisher was acknowledged is in its subscribers' hands when they start flushing.

use actix::prelude::*;
use tracing::debug;

use super::Router;
use crate::session::{Drain, Routed, Session};

/// Stop routing and tell every session to drain (see the module documentation).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Router {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.stopping = true;
        if let Some(timer) = self.stall_timer.take() {
            ctx.cancel_future(timer);
        }
        let parked = self.parked.take_all();
        let given_up = parked.len();
        for route in parked {
            refuse(Some(route.from));
        }
        let mut sessions = 0;
        for client in self.clients.iter().flatten() {
            client.session.do_send(Drain);
            sessions += 1;
        }
        debug!(sessions, batches_given_up = given_up, "router: routing stopped, sessions told to drain");
    }
}

/// Answers a batch that will not be routed: none of its acknowledgements go out. (The session's
/// acknowledgements are in batch order; an answer of zero releases none of anybody's.)
pub(super) fn refuse(from: Option<Addr<Session>>) {
    if let Some(publisher) = from {
        publisher.do_send(Routed { acks: 0, stored: true });
    }
}
