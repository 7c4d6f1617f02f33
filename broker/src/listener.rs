//! A listener: accepts connections on one bound socket and starts a session for each, spread
//! round-robin over the worker arbiters (one per core). On a TLS listener the worker that will
//! own the session does the handshake first, so the listener never waits on a client.
//!
//! [`StopAccepting`] closes the listening socket at once, so that from then on a new connection
//! is refused (the first step of a graceful shutdown).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::session::{ConnectionPermit, Session, SessionShared};
use crate::transport::tls::TlsListener;
use crate::transport::websocket::WebSocketListener;

/// Pause after a failed accept (out of file descriptors, typically) before trying again, so the
/// listener does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The listening socket, shared by the listener and the stream of its connections, so that
/// [`StopAccepting`] closes it there and then rather than whenever the actor's context goes.
type Socket = Rc<RefCell<Option<TcpListener>>>;

pub struct Listener {
    name: String,
    socket: Socket,
    workers: Arc<[ArbiterHandle]>,
    next_worker: usize,
    sessions: Arc<SessionShared>,
    max_connections: Option<usize>,
    active: Arc<AtomicUsize>,
    /// Set for `ssl: on`: every connection goes through a TLS handshake first.
    tls: Option<Arc<TlsListener>>,
    /// Set for `type: ws`: every connection speaks HTTP first and upgrades to WebSocket.
    websocket: Option<Arc<WebSocketListener>>,
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
            socket: Rc::new(RefCell::new(Some(socket))),
            workers,
            next_worker: 0,
            sessions,
            max_connections,
            active: Arc::default(),
            tls: None,
            websocket: None,
        }
    }

    /// Serves TLS with `tls` (None: plain TCP).
    pub(crate) fn with_tls(mut self, tls: Option<Arc<TlsListener>>) -> Self {
        self.tls = tls;
        self
    }

    /// Serves MQTT over WebSocket with `websocket` (None: MQTT right on the stream).
    pub(crate) fn with_websocket(mut self, websocket: Option<Arc<WebSocketListener>>) -> Self {
        self.websocket = websocket;
        self
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
        if let Some(websocket) = self.websocket.clone() {
            let tls = self.tls.clone();
            // The HTTP service and the session it starts are not Send: run on the worker's own task.
            worker.spawn_fn(move || {
                actix_rt::spawn(websocket.serve(stream, peer, tls, sessions, permit));
            });
            return;
        }
        let Some(tls) = self.tls.clone() else {
            worker.spawn_fn(move || Session::start(stream, peer, sessions, permit));
            return;
        };
        worker.spawn(async move {
            let tcp = match TcpStream::from_std(stream) {
                Ok(tcp) => tcp,
                Err(error) => {
                    warn!(%peer, %error, "cannot register accepted socket; connection dropped");
                    return;
                }
            };
            let timeout = sessions.settings.connect_timeout;
            if let Some((stream, identity)) = tls.handshake(tcp, peer, timeout, &sessions.stats).await {
                let (read, write) = tokio::io::split(stream);
                Session::start_on(read, Box::new(write), peer, identity, sessions, permit);
            }
        });
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(Incoming(self.socket.clone()));
    }
}

/// Close the listening socket and stop: new connections are refused from then on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

impl Handler<StopAccepting> for Listener {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) {
        if self.socket.borrow_mut().take().is_some() {
            info!(listener = %self.name, "listener closed: no new connections");
        }
        ctx.stop();
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

/// The accepted connections of a listening socket, as a stream that ends once it is closed.
struct Incoming(Socket);

impl Stream for Incoming {
    type Item = io::Result<(TcpStream, SocketAddr)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match &*self.0.borrow() {
            Some(socket) => socket.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        }
    }
}
