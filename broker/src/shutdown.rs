//! Graceful shutdown: what `RunningBroker::stop` (and so SIGTERM and SIGINT) does before the
//! actor system goes.
//!
//! 1. Every listener closes its socket: a new connection is refused from then on.
//! 2. The router stops routing and tells every session to drain (see `router::shutdown`): each
//!    writes out what was routed to it, takes nothing new from its client and closes.
//! 3. Once no client is connected any more, or at [`DRAIN_DEADLINE`] whatever the clients do
//!    (one that does not read can hold its connection no longer), the system stops; persistence
//!    then saves what is pending.
//!
//! Stopping the system straight away would lose what is on its way to subscribers: deliveries
//! in their mailboxes and queues, and write buffers not yet flushed, some of them messages their
//! publishers were already acknowledged.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_rt::System;
use tracing::info;

use crate::listener::{Listener, StopAccepting};
use crate::router::{Router, Shutdown};
use crate::stats::Stats;

/// How long connections get to take what is queued for them. The process must end within 5 s
/// of a SIGTERM; this leaves the rest for the final save of persistence and the threads' ends.
pub(crate) const DRAIN_DEADLINE: Duration = Duration::from_secs(3);

/// How often the count of connected clients is looked at while they drain.
const POLL: Duration = Duration::from_millis(10);

/// What a graceful stop needs to reach: the listeners, the router, and the count of connected
/// clients.
pub(crate) struct GracefulStop {
    pub acceptors: Vec<Addr<Listener>>,
    pub router: Addr<Router>,
    pub stats: Arc<Stats>,
}

impl GracefulStop {
    /// Runs the steps of the module documentation on the system's arbiter, then stops the
    /// system.
    pub(crate) async fn run(self) {
        let started = tokio::time::Instant::now();
        let deadline = started + DRAIN_DEADLINE;
        for acceptor in &self.acceptors {
            // An error means the listener is gone already, which is as good.
            let _ = acceptor.send(StopAccepting).await;
        }
        let stats = self.stats.clone();
        let drained = tokio::time::timeout_at(deadline, async move {
            let _ = self.router.send(Shutdown).await;
            while stats.snapshot().clients_connected > 0 {
                actix_rt::time::sleep(POLL).await;
            }
        })
        .await;
        if drained.is_ok() {
            info!(took = ?started.elapsed(), "shutdown: every connection has taken what was routed to it and is closed");
        } else {
            let left = self.stats.snapshot();
            info!(
                connections = left.clients_connected,
                queued_messages = left.queued,
                unacknowledged_messages = left.inflight_out,
                deadline = ?DRAIN_DEADLINE,
                "shutdown: clients still connected at the deadline are cut off with what they have not taken"
            );
        }
        System::current().stop();
    }
}
