//! A session's part in the broker's graceful shutdown.
//!
//! When the broker stops, the router sends every session a [`Drain`] once everything it routed
//! before is in the session's mailbox. A draining session takes nothing new from its client
//! (PUBLISH, SUBSCRIBE and UNSUBSCRIBE are ignored, so nothing is acknowledged that the next
//! broker would not have), writes out what is queued for it, then shuts the write side down.
//! It goes on reading until the client closes in turn (or stays silent for [`LINGER`]): closing
//! a socket with unread input makes the kernel reset the connection and throw away whatever it
//! has not yet transmitted, which would lose the very messages just flushed. A client that does
//! not read never lets the flush end; the broker's deadline closes it as it is.

use actix::prelude::*;
use std::time::{Duration, Instant};

use super::connection::Drain as State;
use super::{Close, Session};

/// Silence after which a lingering connection is closed although the client has not closed
/// its side: by then it has sent what it was going to.
pub(super) const LINGER: Duration = Duration::from_millis(200);

/// The broker is shutting down: write out what is queued, take nothing new, then close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Session {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        // A parked persistent session has no client to flush to: its state is in the store
        // (persistence on) or goes with the process.
        let Some(conn) = self.conn.as_mut().filter(|conn| !conn.is_closing()) else { return };
        conn.start_draining();
        let _entered = self.span().entered();
        tracing::debug!("broker shutting down: writing out what is queued");
        self.pump();
        self.flush(ctx);
    }
}

impl Session {
    /// Whether the broker is shutting down and this connection only writes out what it has.
    pub(super) fn draining(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| conn.drain() != State::No)
    }

    /// Called when nothing is left to write: once the queue is empty too, shuts the write side
    /// down and starts lingering. Messages behind a full in-flight window wait for the client's
    /// acknowledgements, which the reader still takes.
    pub(super) fn drain_progress(&mut self, ctx: &mut Context<Self>) {
        let flushing = self.conn.as_ref().is_some_and(|conn| conn.drain() == State::Flushing);
        if !flushing || self.outbound.queued_len() > 0 {
            return;
        }
        let Some(shut) = self.conn.as_mut().and_then(|conn| conn.shut_write()) else { return };
        ctx.spawn(shut.into_actor(self));
        // Silence is counted from now: what the client sends in answer to the last writes is
        // still to come.
        self.last_activity = Instant::now();
        self.linger(ctx);
    }

    fn linger(&mut self, ctx: &mut Context<Self>) {
        if !self.conn.as_ref().is_some_and(|conn| conn.drain() == State::Lingering) {
            return;
        }
        let quiet = self.last_activity.elapsed();
        if quiet >= LINGER {
            return self.close(ctx, Close::ShutDown);
        }
        ctx.run_later(LINGER - quiet, |act, ctx| act.linger(ctx));
    }
}
