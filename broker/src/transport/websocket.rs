//! MQTT over WebSocket (`type: ws`; wss with `ssl: on`), MQTT 3.1.1 section 6.
//!
//! A ws listener accepts like a tcp listener (the same `Listener` actor: `max-connections` at
//! accept, round-robin over the worker arbiters, TLS first for wss through the tcp listeners'
//! own [`TlsListener`], so a failed handshake is logged and counted the same way). On the
//! worker, actix-http's HTTP/1 service with an actix-web app runs the upgrade over that stream;
//! the app answers any path, negotiates the subprotocol `mqtt` (or MQTT 3.1's `mqttv3.1`) and
//! refuses a client that offers neither with HTTP 400, as the client MUST offer it
//! [MQTT-6.0.0-3]. The HTTP request must arrive within `connect-timeout`.
//!
//! After the upgrade the session sees a plain byte stream, exactly as over TCP: [`WsReader`]
//! hands over the payload of each binary frame as it comes (a packet may span frames, a frame
//! may hold several packets), answers pings and the peer's close, and ends the stream with an
//! error on a text frame [MQTT-6.0.0-1]; [`WsWriter`] sends each flush of the session as one
//! binary frame, and a close frame when the session drops the connection.
//!
//! Why not actix-web's `HttpServer`: it accepts on threads of its own, does TLS handshakes it
//! neither logs nor counts, and has no per-listener connection limit; feeding our accepted
//! stream to the same HTTP service keeps every transport on one accept path and one set of
//! worker threads.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use actix_http::body::BoxBody;
use actix_http::error::{DispatchError, PayloadError};
use actix_http::ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use actix_http::{Extensions, HttpService, KeepAlive};
use actix_service::boxed::{self, RcService};
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::http::header::{HeaderMap, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{web, App, HttpRequest, HttpResponse, ResponseError};
use actix_ws::MessageStream;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error, info, warn};

use super::tls::TlsListener;
use crate::session::{ConnectionPermit, Session, SessionShared, TransportIdentity};
use crate::stats::Stats;

/// The subprotocol of MQTT 3.1.1 [MQTT-6.0.0-4], and the one of MQTT 3.1 that older clients
/// (Paho JavaScript, ...) still offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Smallest limit on one incoming frame (actix-ws' default); above it, the broker's
/// `max-packet-size`, so that any packet the session accepts fits in one frame.
const MIN_FRAME_LIMIT: usize = 64 * 1024;

/// Distinguishes the listeners in the per-thread service cache.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// The HTTP/1 service of one listener on one worker thread: takes a connection, runs it.
type ConnectionService = RcService<(Link, Option<SocketAddr>), (), DispatchError>;
type WeakService = Weak<<ConnectionService as Deref>::Target>;

thread_local! {
    /// Built on a worker's first connection of each ws listener, shared by the next ones. Held
    /// weakly: a task on the worker's arbiter owns each, so it is dropped with the arbiter,
    /// while the thread's runtime still exists (its timers need it), not with the thread.
    static SERVICES: RefCell<Vec<(usize, WeakService)>> = const { RefCell::new(Vec::new()) };
}

/// The WebSocket side of a `type: ws` listener.
pub(crate) struct WebSocketListener {
    id: usize,
    name: String,
}

impl WebSocketListener {
    pub(crate) fn new(name: &str) -> WebSocketListener {
        WebSocketListener { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), name: name.to_string() }
    }

    /// Serves one accepted connection on the current worker arbiter: TLS first when `tls` is
    /// set, then the HTTP upgrade, then a session; returns when the connection has ended.
    pub(crate) async fn serve(
        self: Arc<Self>,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<TlsListener>>,
        sessions: Arc<SessionShared>,
        permit: ConnectionPermit,
    ) {
        let tcp = match TcpStream::from_std(stream) {
            Ok(tcp) => tcp,
            Err(error) => {
                warn!(listener = %self.name, %peer, %error, "cannot register accepted socket; connection dropped");
                return;
            }
        };
        let (io, identity) = match tls {
            None => (LinkIo::Plain(tcp), None),
            Some(tls) => {
                let timeout = sessions.settings.connect_timeout;
                match tls.handshake(tcp, peer, timeout, &sessions.stats).await {
                    Some((stream, identity)) => (LinkIo::Tls(Box::new(stream)), identity),
                    None => return,
                }
            }
        };
        let Some(service) = self.service(&sessions).await else { return };
        let handoff = Rc::new(Handoff {
            peer,
            identity: Cell::new(identity),
            permit: Cell::new(Some(permit)),
            answered: Cell::new(false),
        });
        let started = Instant::now();
        let result = service.call((Link { io, handoff: handoff.clone() }, Some(peer))).await;
        if let Some(permit) = handoff.permit.take() {
            // The connection ended without becoming a session; refusals were logged already.
            drop(permit);
            if !handoff.answered.get() {
                let timeout = sessions.settings.connect_timeout;
                if !timeout.is_zero() && started.elapsed() >= timeout {
                    sessions.stats.connect_timed_out();
                    warn!(listener = %self.name, %peer, ?timeout, "no WebSocket upgrade request within connect-timeout; connection dropped");
                } else {
                    debug!(listener = %self.name, %peer, "connection closed before a WebSocket upgrade request");
                }
            }
        }
        if let Err(error) = result {
            debug!(listener = %self.name, %peer, %error, "WebSocket connection ended with an HTTP error");
        }
    }

    /// This thread's HTTP/1 service for this listener, built on first use.
    async fn service(&self, sessions: &Arc<SessionShared>) -> Option<ConnectionService> {
        let cached = SERVICES.with_borrow(|services| {
            services.iter().find(|(id, _)| *id == self.id).and_then(|(_, service)| service.upgrade())
        });
        if cached.is_some() {
            return cached;
        }
        let endpoint = web::Data::new(Endpoint { name: self.name.clone(), sessions: sessions.clone() });
        let app = App::new().app_data(endpoint).default_service(web::to(upgrade));
        let factory = HttpService::<Link, _, BoxBody>::build()
            // One request per connection: the upgrade, or a refusal and the connection closes.
            .keep_alive(KeepAlive::Disabled)
            .client_request_timeout(sessions.settings.connect_timeout)
            .on_connect_ext(|link: &Link, extensions: &mut Extensions| {
                extensions.insert(link.handoff.clone());
            })
            .h1(map_config(app, |()| AppConfig::default()));
        match factory.new_service(()).await {
            Ok(service) => {
                let service = boxed::rc_service(service);
                SERVICES.with_borrow_mut(|services| {
                    services.retain(|(id, _)| *id != self.id);
                    services.push((self.id, Rc::downgrade(&service)));
                });
                let owner = service.clone();
                actix_rt::spawn(async move {
                    let _owner = owner;
                    std::future::pending::<()>().await;
                });
                Some(service)
            }
            Err(error) => {
                error!(listener = %self.name, ?error, "cannot build the WebSocket HTTP service; connection dropped");
                None
            }
        }
    }
}

/// What the request handler needs of its listener.
struct Endpoint {
    name: String,
    sessions: Arc<SessionShared>,
}

/// What the accept path hands to the request handler through the connection's extensions: the
/// listener slot and what TLS learned, taken by the session the upgrade starts.
struct Handoff {
    peer: SocketAddr,
    identity: Cell<Option<TransportIdentity>>,
    permit: Cell<Option<ConnectionPermit>>,
    /// The handler answered a request (a refusal it logged, or the upgrade).
    answered: Cell<bool>,
}

/// Answers any request on a ws listener: upgrades it to a session, or refuses it.
async fn upgrade(req: HttpRequest, body: web::Payload, endpoint: web::Data<Endpoint>) -> HttpResponse {
    let Some(handoff) = req.conn_data::<Rc<Handoff>>().cloned() else {
        error!(listener = %endpoint.name, "WebSocket request without its connection hand-off; refused");
        return HttpResponse::InternalServerError().finish();
    };
    handoff.answered.set(true);
    let (listener, peer) = (&endpoint.name, handoff.peer);
    if let Err(error) = actix_http::ws::verify_handshake(req.head()) {
        info!(listener, %peer, method = %req.method(), path = req.path(), %error, "not a WebSocket upgrade request; refused");
        return error.error_response();
    }
    let Some(protocol) = mqtt_subprotocol(req.headers()) else {
        warn!(
            listener, %peer, offered = ?req.headers().get(SEC_WEBSOCKET_PROTOCOL),
            "WebSocket upgrade refused: the client did not offer the subprotocol \"mqtt\" [MQTT-6.0.0-3]"
        );
        return HttpResponse::BadRequest()
            .body("MQTT over WebSocket: offer the subprotocol \"mqtt\" in Sec-WebSocket-Protocol\n");
    };
    let Some(permit) = handoff.permit.take() else {
        // A second request on one connection cannot happen with keep-alive off.
        return HttpResponse::BadRequest().finish();
    };
    let (response, ws, messages) = match actix_ws::handle_with_protocols(&req, body, &[protocol]) {
        Ok(upgraded) => upgraded,
        Err(error) => {
            info!(listener, %peer, %error, "WebSocket upgrade failed");
            return error.error_response();
        }
    };
    let sessions = endpoint.sessions.clone();
    let frame_limit = sessions.settings.max_packet_size.max(MIN_FRAME_LIMIT);
    let close_code = Rc::new(Cell::new(CloseCode::Normal));
    let reader = WsReader::new(messages.max_frame_size(frame_limit), ws.clone(), close_code.clone(), &sessions.stats);
    let writer = WsWriter::new(ws, close_code);
    debug!(listener, %peer, protocol, path = req.path(), "WebSocket upgraded");
    Session::start_on(reader, Box::new(writer), peer, handoff.identity.take(), sessions, permit);
    response
}

/// The subprotocol to answer with: `mqtt` when the client offers it, else `mqttv3.1`; None when
/// it offers neither.
fn mqtt_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    let mut best: Option<usize> = None;
    for name in offered {
        if let Some(rank) = SUBPROTOCOLS.iter().position(|known| *known == name) {
            best = Some(best.map_or(rank, |best| best.min(rank)));
        }
    }
    best.map(|rank| SUBPROTOCOLS[rank])
}

/// The connection under the HTTP exchange (plain TCP or TLS) with its hand-off.
struct Link {
    io: LinkIo,
    handoff: Rc<Handoff>,
}

enum LinkIo {
    Plain(TcpStream),
    /// Boxed: a TLS connection's state is large, and the enum should not make plain ws pay it.
    Tls(Box<TlsStream<TcpStream>>),
}

macro_rules! on_io {
    ($link:expr, $io:ident => $call:expr) => {
        match &mut $link.get_mut().io {
            LinkIo::Plain($io) => {
                let $io = Pin::new($io);
                $call
            }
            LinkIo::Tls($io) => {
                let $io = Pin::new($io.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Link {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        on_io!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Link {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        on_io!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            LinkIo::Plain(io) => io.is_write_vectored(),
            LinkIo::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, io => io.poll_shutdown(cx))
    }
}

/// The session's read side: the payloads of the client's binary frames as one byte stream.
struct WsReader {
    messages: MessageStream,
    /// For the replies the protocol asks of the reader (pong, close).
    replies: actix_ws::Session,
    /// What is left of the frame being read.
    frame: Bytes,
    /// A reply waiting for room in the outgoing queue.
    reply: Option<Message>,
    /// Whether the fragmented message being received is text.
    text_fragments: bool,
    /// The client closed (or the stream failed): nothing more is read.
    ended: bool,
    /// The code of the close frame the writer sends when the session drops the connection.
    close_code: Rc<Cell<CloseCode>>,
    stats: Arc<Stats>,
}

impl WsReader {
    fn new(
        messages: MessageStream,
        replies: actix_ws::Session,
        close_code: Rc<Cell<CloseCode>>,
        stats: &Arc<Stats>,
    ) -> WsReader {
        WsReader {
            messages,
            replies,
            frame: Bytes::new(),
            reply: None,
            text_fragments: false,
            ended: false,
            close_code,
            stats: stats.clone(),
        }
    }

    /// Ends the stream for a client that broke the rules: the session closes the connection,
    /// and the close frame says why.
    fn violation(&mut self, code: CloseCode, what: String) -> Poll<io::Result<()>> {
        self.ended = true;
        self.close_code.set(code);
        self.stats.protocol_error();
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, what)))
    }

    /// Sends the waiting reply, if any, once the outgoing queue has room.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(reply) = self.reply.take() else { return Poll::Ready(()) };
        let mut replies = Pin::new(&mut self.replies);
        match replies.as_mut().poll_ready(cx) {
            Poll::Pending => {
                self.reply = Some(reply);
                return Poll::Pending;
            }
            // The connection is going away: nobody to answer.
            Poll::Ready(Err(_)) => {}
            Poll::Ready(Ok(())) => {
                let _ = replies.start_send(reply);
            }
        }
        Poll::Ready(())
    }
}

impl AsyncRead for WsReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_reply(cx));
            if !this.frame.is_empty() {
                let n = this.frame.len().min(buf.remaining());
                buf.put_slice(&this.frame[..n]);
                this.frame.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let message = match ready!(Pin::new(&mut this.messages).poll_next(cx)) {
                Some(Ok(message)) => message,
                // The connection closed without a close frame: end of stream all the same.
                None => {
                    this.ended = true;
                    continue;
                }
                // The socket closed without a close frame (an "incomplete payload" to actix):
                // the frames that arrived with the end are still to be read, then the stream
                // ends (None above). A DISCONNECT sent just before closing is not lost.
                Some(Err(ProtocolError::Io(error)))
                    if error
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref())
                        .is_some_and(|inner| matches!(inner, PayloadError::Incomplete(_))) =>
                {
                    continue;
                }
                Some(Err(ProtocolError::Io(error))) => {
                    this.ended = true;
                    return Poll::Ready(Err(error));
                }
                Some(Err(error)) => {
                    let code = match error {
                        ProtocolError::Overflow => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    return this.violation(code, format!("WebSocket protocol error: {error}"));
                }
            };
            match message {
                Message::Binary(bytes) => this.frame = bytes,
                Message::Continuation(Item::FirstBinary(bytes)) => {
                    this.text_fragments = false;
                    this.frame = bytes;
                }
                Message::Continuation(Item::Continue(bytes) | Item::Last(bytes)) if !this.text_fragments => {
                    this.frame = bytes;
                }
                Message::Text(_) | Message::Continuation(_) => {
                    this.text_fragments = true;
                    return this.violation(
                        CloseCode::Unsupported,
                        "WebSocket text frame: MQTT travels in binary frames only [MQTT-6.0.0-1]".to_string(),
                    );
                }
                Message::Ping(payload) => this.reply = Some(Message::Pong(payload)),
                Message::Pong(_) | Message::Nop => {}
                Message::Close(reason) => {
                    // Answer with the client's code, then the session sees the end of the stream.
                    let code = reason.map_or(CloseCode::Normal, |reason| reason.code);
                    this.reply = Some(Message::Close(Some(CloseReason::from(code))));
                    this.ended = true;
                }
            }
        }
    }
}

/// The session's write side: each flush becomes one binary frame.
struct WsWriter {
    ws: actix_ws::Session,
    buf: BytesMut,
    close_code: Rc<Cell<CloseCode>>,
    closed: bool,
}

impl WsWriter {
    fn new(ws: actix_ws::Session, close_code: Rc<Cell<CloseCode>>) -> WsWriter {
        WsWriter { ws, buf: BytesMut::new(), close_code, closed: false }
    }

    fn send(&mut self, cx: &mut Context<'_>, message: impl FnOnce(&mut Self) -> Message) -> Poll<io::Result<()>> {
        let mut ws = Pin::new(&mut self.ws);
        if ready!(ws.as_mut().poll_ready(cx)).is_err() {
            return Poll::Ready(Err(gone()));
        }
        let message = message(self);
        Poll::Ready(Pin::new(&mut self.ws).start_send(message).map_err(|_| gone()))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket connection closed")
}

impl AsyncWrite for WsWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(gone()));
        }
        // Collected until the flush, which the session does after each batch of packets.
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        this.send(cx, |this| Message::Binary(this.buf.split().freeze()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut *this).poll_flush(cx))?;
        ready!(this.send(cx, |this| Message::Close(Some(CloseReason::from(this.close_code.get())))))?;
        this.closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for WsWriter {
    /// The session drops its connection without shutting it down: say goodbye with a close
    /// frame if the outgoing queue has room (it ends the HTTP response, which closes the
    /// socket); otherwise the socket closes when the queue's last sender goes.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(self).poll_shutdown(&mut cx);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn offered(values: &[&'static str]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(value));
        }
        mqtt_subprotocol(&headers)
    }

    #[test]
    fn subprotocol_mqtt_preferred_then_mqttv31() {
        assert_eq!(offered(&["mqtt"]), Some("mqtt"));
        assert_eq!(offered(&["mqttv3.1"]), Some("mqttv3.1"));
        assert_eq!(offered(&["mqttv3.1, mqtt"]), Some("mqtt"));
        assert_eq!(offered(&["chat", "mqttv3.1"]), Some("mqttv3.1"));
        assert_eq!(offered(&["chat", " mqtt "]), Some("mqtt"));
    }

    #[test]
    fn subprotocol_missing_or_other_is_none() {
        assert_eq!(offered(&[]), None);
        assert_eq!(offered(&["chat, MQTT"]), None);
        assert_eq!(offered(&[""]), None);
    }
}
