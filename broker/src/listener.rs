//! A listener: accepts connections on one bound socket and starts a session for each, spread
//! round-robin over the worker arbiters (one per core).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::session::{ConnectionPermit, Session, SessionShared};

/// Pause after a failed accept (out of file descriptors, typically) before trying again, so the
/// listener does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub struct Listener {
    name: String,
    socket: Option<TcpListener>,
    workers: Arc<[ArbiterHandle]>,
    next_worker: usize,
    sessions: Arc<SessionShared>,
    max_connections: Option<usize>,
    active: Arc<AtomicUsize>,
}

impl Listener {
    pub fn new(
        name: String,
        socket: TcpListener,
        workers: Arc<[ArbiterHandle]>,
        sessions: Arc<SessionShared>,
        max_connections: Option<usize>,
    ) -> Self {
        Listener {
            name,
            socket: Some(socket),
            workers,
            next_worker: 0,
            sessions,
            max_connections,
            active: Arc::default(),
        }
    }

    fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        if let Some(max) = self.max_connections {
            if self.active.load(Ordering::Relaxed) >= max {
                self.sessions.stats.connection_refused();
                warn!(listener = %self.name, %peer, max_connections = max, "connection refused: max-connections reached");
                return;
            }
        }
        // Latency over packet count: every write is a whole batch already.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        // A tokio socket belongs to the reactor of the thread that registered it: hand the raw
        // socket to the worker, which registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                warn!(%peer, %error, "cannot hand over accepted socket; connection dropped");
                return;
            }
        };
        let permit = ConnectionPermit::new(self.active.clone());
        let sessions = self.sessions.clone();
        let worker = &self.workers[self.next_worker % self.workers.len()];
        self.next_worker = self.next_worker.wrapping_add(1);
        worker.spawn_fn(move || Session::start(stream, peer, sessions, permit));
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(socket) = self.socket.take() {
            ctx.add_stream(Incoming(socket));
        }
    }
}

impl StreamHandler<io::Result<(TcpStream, SocketAddr)>> for Listener {
    fn handle(&mut self, item: io::Result<(TcpStream, SocketAddr)>, ctx: &mut Self::Context) {
        match item {
            Ok((stream, peer)) => self.accept(stream, peer),
            Err(error) => {
                warn!(listener = %self.name, %error, "accept failed; pausing briefly");
                ctx.wait(actix::clock::sleep(ACCEPT_ERROR_PAUSE).into_actor(self));
            }
        }
    }
}

/// The accepted connections of a listening socket, as a stream.
struct Incoming(TcpListener);

impl Stream for Incoming {
    type Item = io::Result<(TcpStream, SocketAddr)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_accept(cx).map(Some)
    }
}
