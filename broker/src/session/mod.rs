//! One client session: an actor that owns a client's connection and its MQTT state.
//!
//! The actor decodes everything a read brings in, answers the QoS flows, sends the client's
//! PUBLISH packets to the router in one batch per read, and writes what it has to send into one
//! buffer that is flushed once per wake-up. A session with `clean_session = 0` outlives its
//! connection: the actor stays alive without a socket, keeps queueing QoS 1/2 messages (within
//! `max-queued-messages`) and hands its state to the next connection with the same client id.

mod connection;
mod drain;
mod keepalive;
mod outbound;
mod reader;
mod topic_limits;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use amqtt_plugin_api::{Action, ClientInfo, Event};
use amqtt_protocol::{
    frame_len, ByteString, ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill, Packet, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode, UnsubAck,
};
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::io::AsyncRead;
use tracing::{debug, warn, Span};

use crate::plugins::{AuthOutcome, PluginHost};
use crate::router::{self, Registered, Router};
use crate::stats::Stats;
use crate::storage::{Change, MessageState, StorageHandle, StoredMessage, StoredSession};
use connection::Connection;
pub(crate) use connection::{BoxedWriter, ConnectionPermit};
pub(crate) use drain::Drain;
use outbound::Dropped;
pub(crate) use outbound::Limits;
use outbound::Outbound;
use reader::{FrameReader, ReadError, ReadGate};
use topic_limits::TopicLimitExceeded;
pub(crate) use topic_limits::TopicLimits;

/// Logs an event with the connection's peer address and client id as fields. The per-connection
/// span is a debug-level span (at info level it would cost every idle connection its formatted
/// fields), so events at info level and above carry the two fields themselves.
macro_rules! conn_event {
    ($level:ident, $session:expr, $($rest:tt)+) => {
        tracing::$level!(peer = %$session.peer, client_id = %$session.client_id, $($rest)+)
    };
}

/// Seconds since the Unix epoch, as the store records disconnections.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// What a transport learned about a client before MQTT began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TransportIdentity {
    /// Subject of the client's verified TLS certificate, e.g. `CN=device-7,O=Acme`.
    pub cert_subject: Option<String>,
    /// Replaces the user name of the CONNECT (`use-identity-as-username`).
    pub username: Option<String>,
}

/// Settings every session follows, from the broker configuration.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub connect_timeout: Duration,
    /// Added to 1.5 times the keep-alive before a silent client is disconnected.
    pub keep_alive_grace: Duration,
    pub max_packet_size: usize,
    pub max_queued_messages: usize,
    /// `max-topic-length` and `max-topic-levels`.
    pub(crate) topic_limits: TopicLimits,
}

/// What every session of a broker shares.
pub struct SessionShared {
    pub settings: SessionSettings,
    /// Where persistent sessions save their state, when persistence is on.
    pub(crate) storage: Option<StorageHandle>,
    /// `session_expiry_interval`: how long a persistent session outlives its connection.
    pub(crate) session_expiry: Option<Duration>,
    /// `settings`' queue limits in the form the outbound queue takes them.
    pub(crate) limits: Limits,
    /// How many messages a session lets go between two reports to the router's admission
    /// control (see `report_drained`).
    pub(crate) admission_step: u32,
    pub router: Addr<Router>,
    pub stats: Arc<Stats>,
    pub(crate) plugins: Arc<PluginHost>,
}

/// The state of a persistent session that moves from one connection's actor to the next.
#[derive(Debug)]
pub struct SessionState {
    outbound: Outbound,
    /// Packet ids of QoS 2 messages received and routed whose PUBREL has not come yet: a
    /// PUBLISH re-sent with one of them is not routed again [MQTT-4.3.3-2].
    awaiting_pubrel: BTreeSet<u16>,
}

/// Messages routed to this session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub batch: Vec<Publish>,
    /// For a persistent session with persistence on: where each message of `batch` is kept
    /// (0: not kept, QoS 0). Empty otherwise.
    pub seqs: Vec<u64>,
}

/// The router has applied a SUBSCRIBE.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeDone {
    pub pkid: u16,
    pub return_codes: Vec<SubscribeReturnCode>,
    /// Filters refused because the client has `max-subscriptions-per-client` subscriptions.
    pub over_limit: u32,
}

/// The router has applied an UNSUBSCRIBE.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnsubscribeDone {
    pub pkid: u16,
}

/// The router has routed one `Route` batch of this session: its acknowledgements can go out.
/// A batch meeting a subscriber without room waits at the router (see `router::admission`),
/// and its acknowledgements with it: that is what holds a publisher back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Routed {
    pub acks: u32,
    /// False when persistence could not commit the batch: its acknowledgements must not go
    /// out, and the connection is closed (the client sends the messages again).
    pub stored: bool,
}

/// Another connection claimed this session's client id: close the connection and stop,
/// handing over the session state when it is resumed.
#[derive(Message)]
#[rtype(result = "Option<SessionState>")]
pub struct TakeOver {
    pub keep_state: bool,
}

/// Why a connection ends; decides the log level and whether the will is published.
#[derive(Debug)]
enum Close {
    /// The client sent DISCONNECT: the will is discarded [MQTT-3.14.4-3].
    Disconnect,
    /// The socket closed without DISCONNECT.
    PeerClosed,
    Io(std::io::Error),
    Malformed(DecodeError),
    ProtocolViolation(&'static str),
    KeepAliveTimeout(Duration),
    ConnectTimeout,
    /// CONNACK with this refusal was written: flush it, then close.
    Refused(ConnectReturnCode),
    TakenOver,
    /// The router is gone (broker shutting down).
    ServerUnavailable,
    /// Persistence failed to commit what the client published.
    StorageFailed,
    /// A PUBLISH or will topic over `max-topic-length` or `max-topic-levels`.
    TopicLimit(TopicLimitExceeded),
    /// The broker is shutting down and this connection has taken what was queued for it.
    ShutDown,
}

impl Close {
    fn publishes_will(&self) -> bool {
        // Not at shutdown either: nothing is routed any more (the client's next broker has its will).
        !matches!(self, Close::Disconnect | Close::Refused(_) | Close::ConnectTimeout | Close::ShutDown)
    }
}

/// What the router assigned to the accepted CONNECT (the id itself is `Session::client_id`).
struct ClientIdentity {
    generation: u64,
    clean_session: bool,
}

/// Byte count above which the session stops writing new messages into the connection's buffer
/// until the socket has taken what is there: a client that does not read cannot make the
/// broker's memory grow, its messages wait in the bounded queue instead.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Packet types (the high nibble of the first byte) that change the client's subscriptions.
const SUBSCRIBE_TYPE: u8 = 8;
const UNSUBSCRIBE_TYPE: u8 = 10;

/// Batches a publisher may have waiting at the router before it stops reading from its client.
/// With PUBACK/PUBREC sent only once a batch is routed, this bounds how far a client's
/// acknowledged messages can run ahead of routing, and so the router's mailbox.
const MAX_ROUTES_IN_FLIGHT: u8 = 4;

/// The answer of the topic-check plugins about a batch: `None` when nothing is checked (every
/// item allowed), else one `bool` per item.
enum Checked {
    Done(Option<Vec<bool>>),
    Waiting(Pin<Box<dyn Future<Output = Vec<bool>>>>),
}

fn keep_allowed<T>(items: Vec<T>, allowed: Option<Vec<bool>>) -> Vec<T> {
    match allowed {
        None => items,
        Some(allowed) => items.into_iter().zip(allowed).filter_map(|(item, ok)| ok.then_some(item)).collect(),
    }
}

/// An acknowledgement owed for a received PUBLISH, written once the message is routed.
#[derive(Debug, Clone, Copy)]
enum Ack {
    PubAck(u16),
    PubRec(u16),
}

impl Ack {
    fn packet(self) -> Packet {
        match self {
            Ack::PubAck(pkid) => Packet::PubAck(PubAck { pkid }),
            Ack::PubRec(pkid) => Packet::PubRec(PubRec { pkid }),
        }
    }
}

pub struct Session {
    peer: SocketAddr,
    /// Empty until CONNECT names (or is given) one.
    client_id: ByteString,
    shared: Arc<SessionShared>,
    conn: Option<Connection>,
    client: Option<ClientIdentity>,
    /// Boxed: most clients have none, and every idle connection pays for the field's size.
    will: Option<Box<LastWill>>,
    /// Silence after which the client is disconnected: 1.5 x its keep-alive plus the grace.
    /// In milliseconds (u32: up to 49 days, and 1.5 x 65 535 s plus any sane grace fits).
    keep_alive_timeout_ms: Option<NonZeroU32>,
    last_activity: Instant,
    outbound: Outbound,
    /// See `SessionState::awaiting_pubrel`. Boxed although a BTreeSet is already on the heap:
    /// the point is the 8 bytes instead of 24 in every session, as most clients never publish at
    /// QoS 2 and the session's size decides its allocation step.
    #[allow(clippy::box_collection)]
    awaiting_pubrel: Option<Box<BTreeSet<u16>>>,
    /// Bytes received after a CONNECT, processed once the CONNECT is answered [MQTT-3.1.4-5].
    /// Boxed: needed for a moment in a connection's life, it should not cost the whole of it.
    deferred: Option<Box<Bytes>>,
    /// Messages dropped in the current burst: from the first message the full queue
    /// (`max-queued-messages`) could not take until it has drained to half. A burst is logged
    /// when it starts and when it ends, however many messages it drops.
    dropped: u32,
    /// Messages received from the router (wrapping), for its admission control: see
    /// `report_drained`.
    received: u32,
    /// Messages let go (written or dropped) by the last report to the router.
    reported_gone: u32,
    /// What publishing needs while messages of this client are on their way through the
    /// router; boxed and dropped when nothing is, so a quiet client does not pay for it.
    publishing: Option<Box<Publishing>>,
    /// Who the client is, as plugins see it: kept after CONNECT only while topic checks or
    /// client events need it, so that it costs nothing otherwise. Before CONNECT, what the
    /// transport learned (a TLS client certificate), if anything.
    client_info: Option<Arc<ClientInfo>>,
}

/// The publishing side of a session while it has messages in the router's hands.
#[derive(Default)]
struct Publishing {
    /// Client PUBLISH packets decoded from the current read, routed together at its end.
    to_route: Vec<Publish>,
    /// Acknowledgements of received PUBLISH packets, in order, waiting for their batch to be
    /// routed: a client is told its message is taken only once it is ("nothing acknowledged is
    /// lost"), and its in-flight window then limits how far it runs ahead of the router.
    unrouted_acks: VecDeque<Ack>,
    /// Acknowledgements owed for the batch being read.
    acks_in_batch: u32,
    routes_in_flight: u8,
}

impl Publishing {
    fn is_idle(&self) -> bool {
        self.to_route.is_empty()
            && self.unrouted_acks.is_empty()
            && self.acks_in_batch == 0
            && self.routes_in_flight == 0
    }
}

impl Session {
    /// Starts a session for a freshly accepted socket on the current arbiter.
    pub(crate) fn start(
        stream: std::net::TcpStream,
        peer: SocketAddr,
        shared: Arc<SessionShared>,
        permit: ConnectionPermit,
    ) {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                warn!(%peer, %error, "cannot register accepted socket; connection dropped");
                return;
            }
        };
        let (read, write) = stream.into_split();
        Session::start_on(read, Box::new(write), peer, None, shared, permit);
    }

    /// Starts a session on an established byte stream of any transport (TLS, WebSocket) on the
    /// current arbiter: the session speaks MQTT over it exactly as over plain TCP.
    pub(crate) fn start_on<R: AsyncRead + Unpin + 'static>(
        read: R,
        write: BoxedWriter,
        peer: SocketAddr,
        identity: Option<TransportIdentity>,
        shared: Arc<SessionShared>,
        permit: ConnectionPermit,
    ) {
        // Kept where the plugins' view of the client will be, until CONNECT completes it.
        let client_info = identity.map(|identity| {
            Arc::new(ClientInfo {
                client_id: String::new(),
                username: identity.username,
                peer,
                cert_subject: identity.cert_subject,
                clean_session: true,
            })
        });
        Session::create(move |ctx| {
            let gate = Rc::new(ReadGate::default());
            let reader = ctx.add_stream(FrameReader::new(read, shared.settings.max_packet_size, gate.clone()));
            Session {
                peer,
                client_id: ByteString::new(),
                conn: Some(Connection::new(write, reader, gate, permit)),
                client: None,
                will: None,
                keep_alive_timeout_ms: None,
                last_activity: Instant::now(),
                outbound: Outbound::default(),
                awaiting_pubrel: None,
                deferred: None,
                dropped: 0,
                received: 0,
                reported_gone: 0,
                publishing: None,
                client_info,
                shared,
            }
        });
    }

    /// Starts, on `worker`, a persistent session saved by an earlier run, without a connection:
    /// it queues for its client until the client comes back and takes it over (or it
    /// expires). `generation` is its registration with the router (see `router::Restore`).
    pub(crate) fn restore(
        worker: &actix_rt::ArbiterHandle,
        stored: StoredSession,
        generation: u64,
        shared: Arc<SessionShared>,
    ) -> Addr<Session> {
        Session::start_in_arbiter(worker, move |ctx| {
            let outbound = Outbound::restore(stored.messages.into_iter().map(|(seq, message)| {
                let sent = match message.state {
                    MessageState::Queued => None,
                    MessageState::Sent { pkid } => Some((pkid, false)),
                    MessageState::Released { pkid } => Some((pkid, true)),
                };
                let StoredMessage { qos, retain, topic, payload, .. } = message;
                (seq, Publish { dup: false, qos, retain, topic, pkid: 0, payload }, sent)
            }));
            crate::stats::inflight_in_changed(stored.incoming.len() as i64);
            let awaiting: BTreeSet<u16> = stored.incoming.into_iter().collect();
            let mut session = Session {
                peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                client_id: stored.client_id,
                conn: None,
                client: Some(ClientIdentity { generation, clean_session: false }),
                will: None,
                keep_alive_timeout_ms: None,
                last_activity: Instant::now(),
                outbound,
                awaiting_pubrel: (!awaiting.is_empty()).then(|| Box::new(awaiting)),
                deferred: None,
                dropped: 0,
                received: 0,
                reported_gone: 0,
                publishing: None,
                client_info: None,
                shared,
            };
            session.shared.stats.session_parked();
            if let Some(expiry) = session.shared.session_expiry {
                let away = stored
                    .record
                    .disconnected_at
                    .map(|at| Duration::from_secs(unix_now().saturating_sub(at)))
                    .unwrap_or_default();
                session.expire_after(expiry.saturating_sub(away), ctx);
            }
            session
        })
    }

    /// Removes this (parked, persistent) session once `after` has passed without its client
    /// coming back (`session_expiry_interval`).
    fn expire_after(&mut self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |act, ctx| {
            if act.conn.is_some() {
                return;
            }
            let Some(client) = &act.client else { return };
            conn_event!(info, act, "persistent session expired (session_expiry_interval): removed");
            act.shared
                .router
                .do_send(router::Unregister { client_id: act.client_id.clone(), generation: client.generation });
            act.shared.stats.session_unparked();
            ctx.stop();
        });
    }

    fn settings(&self) -> &SessionSettings {
        &self.shared.settings
    }

    fn keep_alive_timeout(&self) -> Option<Duration> {
        self.keep_alive_timeout_ms.map(|ms| Duration::from_millis(u64::from(ms.get())))
    }

    /// The connection's span, made when entered rather than stored: it is a debug-level span,
    /// so at the usual levels this costs a level check, and no connection carries a `Span`.
    fn span(&self) -> Span {
        tracing::debug_span!("conn", peer = %self.peer, client_id = %self.client_id)
    }

    /// Decodes and handles every packet of `frames` (whole packets, as cut by the reader).
    fn process(&mut self, mut frames: Bytes, ctx: &mut Context<Self>) {
        while !frames.is_empty() {
            if ctx.waiting() {
                // A CONNECT is being registered: nothing after it is handled before CONNACK.
                self.deferred = Some(Box::new(frames));
                break;
            }
            if matches!(frames[0] >> 4, SUBSCRIBE_TYPE | UNSUBSCRIBE_TYPE) {
                // Messages this read brought in before a (UN)SUBSCRIBE are routed before it, so
                // the change does not overtake them.
                self.route_pending(ctx);
                if ctx.waiting() {
                    self.deferred = Some(Box::new(frames));
                    break;
                }
            }
            let len = match frame_len(&frames, usize::MAX) {
                Ok(Some(len)) => len,
                Ok(None) => return self.close(ctx, Close::ProtocolViolation("truncated packet")),
                Err(error) => return self.close(ctx, Close::Malformed(error)),
            };
            let packet = match Packet::read(frames.split_to(len)) {
                Ok(packet) => packet,
                Err(DecodeError::UnsupportedProtocolLevel { level, .. }) if self.client.is_none() => {
                    // An MQTT 5 (or other) CONNECT gets its answer rather than a bare close
                    // [MQTT-3.1.2-2].
                    debug!(level, "CONNECT for another protocol version");
                    let reason = self.refuse(ConnectReturnCode::UnacceptableProtocolVersion);
                    return self.close(ctx, reason);
                }
                Err(error) => return self.close(ctx, Close::Malformed(error)),
            };
            if let Err(reason) = self.handle_packet(packet, ctx) {
                return self.close(ctx, reason);
            }
        }
        self.route_pending(ctx);
        self.flush(ctx);
    }

    fn handle_packet(&mut self, packet: Packet, ctx: &mut Context<Self>) -> Result<(), Close> {
        let Some(client) = &self.client else {
            // The first packet must be CONNECT [MQTT-3.1.0-1].
            return match packet {
                Packet::Connect(connect) => self.on_connect(connect, ctx),
                other => {
                    debug!(packet = %other.packet_type(), "packet before CONNECT");
                    Err(Close::ProtocolViolation("first packet is not CONNECT"))
                }
            };
        };
        if self.draining() && matches!(packet, Packet::Publish(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_)) {
            // Neither routed nor acknowledged: the client sends it again to the next broker.
            debug!(packet = %packet.packet_type(), "broker shutting down: packet ignored");
            return Ok(());
        }
        match packet {
            Packet::Publish(publish) => {
                // MQTT 3.1.1 has no way to refuse one PUBLISH: a topic over the limits closes.
                self.settings().topic_limits.check(&publish.topic).map_err(Close::TopicLimit)?;
                self.on_publish(publish)
            }
            Packet::PubAck(PubAck { pkid }) => {
                match self.outbound.puback(pkid) {
                    None => debug!(pkid, "PUBACK for an unknown packet id"),
                    Some(seq) => self.save_message_done(seq),
                }
                self.pump();
            }
            Packet::PubRec(PubRec { pkid }) => {
                match self.outbound.pubrec(pkid) {
                    None => debug!(pkid, "PUBREC for an unknown packet id"),
                    Some(seq) => self.save(|client_id| {
                        // Only the packet id matters now: PUBREL is all that is left to send.
                        let message = StoredMessage {
                            state: MessageState::Released { pkid },
                            qos: QoS::ExactlyOnce,
                            retain: false,
                            topic: ByteString::new(),
                            payload: Bytes::new(),
                        };
                        (seq != 0).then_some(Change::MessageSaved { client_id, seq, message })
                    }),
                }
                self.write(Packet::PubRel(PubRel { pkid }));
            }
            Packet::PubRel(PubRel { pkid }) => {
                if let Some(awaiting) = &mut self.awaiting_pubrel {
                    if awaiting.remove(&pkid) {
                        crate::stats::inflight_in_changed(-1);
                        self.save(|client_id| Some(Change::IncomingRemoved { client_id, pkid }));
                    }
                    if self.awaiting_pubrel.as_ref().is_some_and(|awaiting| awaiting.is_empty()) {
                        self.awaiting_pubrel = None;
                    }
                }
                self.write(Packet::PubComp(PubComp { pkid }));
            }
            Packet::PubComp(PubComp { pkid }) => {
                match self.outbound.pubcomp(pkid) {
                    None => debug!(pkid, "PUBCOMP for an unknown packet id"),
                    Some(seq) => self.save_message_done(seq),
                }
                self.pump();
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(client.generation, subscribe, ctx),
            Packet::Unsubscribe(unsubscribe) => self.shared.router.do_send(router::Unsubscribe {
                client_id: self.client_id.clone(),
                generation: client.generation,
                pkid: unsubscribe.pkid,
                filters: unsubscribe.filters,
            }),
            Packet::PingReq => self.write(Packet::PingResp),
            Packet::Disconnect => return Err(Close::Disconnect),
            // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
            Packet::Connect(_) => return Err(Close::ProtocolViolation("second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Close::ProtocolViolation("server-to-client packet sent by the client"));
            }
        }
        Ok(())
    }

    fn on_connect(&mut self, connect: Connect, ctx: &mut Context<Self>) -> Result<(), Close> {
        if connect.protocol_name != "MQTT" && connect.protocol_name != "MQIsdp" {
            // An unknown protocol name may be closed without CONNACK [MQTT-3.1.2-1].
            return Err(Close::ProtocolViolation("protocol name is not MQTT"));
        }
        if connect.protocol_level != 4 || connect.protocol_name != "MQTT" {
            // Only MQTT 3.1.1 is spoken here [MQTT-3.1.2-2].
            return Err(self.refuse(ConnectReturnCode::UnacceptableProtocolVersion));
        }
        let client_id = if connect.client_id.is_empty() {
            if !connect.clean_session {
                // A persistent session needs a client id to be found again [MQTT-3.1.3-8].
                return Err(self.refuse(ConnectReturnCode::IdentifierRejected));
            }
            generate_client_id() // [MQTT-3.1.3-6]
        } else {
            // A copy, so that the id does not keep the whole read buffer it arrived in alive for
            // as long as the session lives.
            ByteString::from(&*connect.client_id)
        };
        self.client_id = client_id.clone();
        if let Some(will) = &connect.will {
            // Checked now rather than when it is published: by then nobody could be told.
            self.settings().topic_limits.check(&will.topic).map_err(Close::TopicLimit)?;
        }
        if connect.keep_alive > 0 {
            let timeout =
                Duration::from_millis(u64::from(connect.keep_alive) * 1500) + self.settings().keep_alive_grace;
            self.keep_alive_timeout_ms = NonZeroU32::new(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        }
        let transport = self.client_info.take();
        // A user name from a verified client certificate (use-identity-as-username) is vouched
        // for by the certificate: the auth chain counts it as an Allow.
        let certificate_vouches = transport.as_ref().is_some_and(|known| known.username.is_some());
        let client = Arc::new(ClientInfo {
            client_id: client_id.to_string(),
            // A user name taken from the client's certificate replaces the CONNECT's.
            username: transport
                .as_ref()
                .and_then(|known| known.username.clone())
                .or_else(|| connect.username.as_deref().map(str::to_string)),
            peer: self.peer,
            cert_subject: transport.and_then(|known| known.cert_subject.clone()),
            clean_session: connect.clean_session,
        });
        let plugins = self.shared.plugins.clone();
        let authenticated =
            plugins.authenticate(client.clone(), connect.password, certificate_vouches, &self.shared.stats);
        // A will is a publish like any other: refused at CONNECT if its topic may not be used.
        let will_topic =
            connect.will.as_ref().filter(|_| plugins.topic_checks_enabled()).map(|will| will.topic.to_string());
        let checked_client = client.clone();
        let decision = async move {
            match (authenticated.await, will_topic) {
                (AuthOutcome::Accepted, Some(topic)) => {
                    let allowed = plugins.check_topics(checked_client, vec![topic], Action::Publish).await;
                    if allowed == [true] {
                        AuthOutcome::Accepted
                    } else {
                        AuthOutcome::NotAuthorized
                    }
                }
                (outcome, _) => outcome,
            }
        };
        let mut decision = Box::pin(decision);
        let (will, clean_session) = (connect.will, connect.clean_session);
        // Polled once as it is: a chain that answers at once (the built-in plugins always do)
        // costs no timer. Only one that waits gets the deadline.
        match decision.as_mut().now_or_never() {
            Some(outcome) => self.on_authenticated(Some(outcome), client, will, clean_session, ctx),
            None => {
                // A plugin that never answers must not hold the connection forever.
                let decision = tokio::time::timeout(self.settings().connect_timeout, decision);
                ctx.wait(decision.into_actor(self).map(move |outcome, act, ctx| {
                    let _entered = act.span().entered();
                    if let Err(reason) = act.on_authenticated(outcome.ok(), client, will, clean_session, ctx) {
                        act.close(ctx, reason);
                    }
                }));
                Ok(())
            }
        }
    }

    /// Goes on with a CONNECT once the plugins have answered (`None`: not in time).
    fn on_authenticated(
        &mut self,
        outcome: Option<AuthOutcome>,
        client: Arc<ClientInfo>,
        will: Option<LastWill>,
        clean_session: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), Close> {
        match outcome {
            Some(AuthOutcome::Accepted) => {}
            Some(AuthOutcome::BadCredentials) => return Err(self.refuse(ConnectReturnCode::BadUserNameOrPassword)),
            Some(AuthOutcome::NotAuthorized) => return Err(self.refuse(ConnectReturnCode::NotAuthorized)),
            None => {
                conn_event!(warn, self, "auth plugins did not answer within the connect timeout: refusing");
                return Err(self.refuse(ConnectReturnCode::ServerUnavailable));
            }
        }
        self.will = will.map(Box::new);
        let plugins = &self.shared.plugins;
        if plugins.topic_checks_enabled() || plugins.events().interests().clients {
            self.client_info = Some(client);
        }
        let client_id = self.client_id.clone();
        let register = router::Register { client_id, clean_session, session: ctx.address() };
        // `wait` holds back the mailbox and the socket until the router has answered, so the
        // resumed state is installed before anything newer is handled.
        ctx.wait(self.shared.router.send(register).into_actor(self).map(move |answer, act, ctx| {
            let _entered = act.span().entered();
            match answer {
                Ok(registered) => act.on_registered(clean_session, registered, ctx),
                Err(_) => {
                    act.write(Packet::ConnAck(ConnAck {
                        session_present: false,
                        code: ConnectReturnCode::ServerUnavailable,
                    }));
                    act.close(ctx, Close::ServerUnavailable);
                }
            }
        }));
        Ok(())
    }

    fn on_registered(&mut self, clean_session: bool, registered: Registered, ctx: &mut Context<Self>) {
        let Registered { generation, session_present, resumed } = registered;
        if let Some(state) = resumed {
            self.outbound = state.outbound;
            self.awaiting_pubrel = (!state.awaiting_pubrel.is_empty()).then(|| Box::new(state.awaiting_pubrel));
        }
        self.client = Some(ClientIdentity { generation, clean_session });
        self.write(Packet::ConnAck(ConnAck { session_present, code: ConnectReturnCode::Accepted }));
        // Unacknowledged messages go again first, in their original order [MQTT-4.4.0-1].
        let resend: Vec<Packet> = self.outbound.resend().collect();
        for packet in resend {
            self.write(packet);
        }
        if let Some(conn) = &mut self.conn {
            conn.mark_connected(&self.shared.stats);
        }
        conn_event!(
            info,
            self,
            clean_session,
            session_present,
            keep_alive_timeout = ?self.keep_alive_timeout(),
            inflight = self.outbound.inflight_len(),
            queued = self.outbound.queued_len(),
            "client connected"
        );
        if let Some(client) = self.client_info.as_ref().filter(|_| self.shared.plugins.events().interests().clients) {
            self.shared.plugins.emit(Event::ClientConnected { client: client.clone() });
        }
        if let Some(timeout) = self.keep_alive_timeout() {
            self.check_keep_alive(timeout, ctx);
        }
        self.pump();
        match self.deferred.take() {
            Some(rest) => self.process(*rest, ctx),
            None => self.flush(ctx),
        }
    }

    /// Writes a refusing CONNACK; the connection closes once it is flushed [MQTT-3.2.2-5].
    fn refuse(&mut self, code: ConnectReturnCode) -> Close {
        self.write(Packet::ConnAck(ConnAck { session_present: false, code }));
        Close::Refused(code)
    }

    fn on_publish(&mut self, mut publish: Publish) {
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.owe(Ack::PubAck(publish.pkid)),
            QoS::ExactlyOnce => {
                self.owe(Ack::PubRec(publish.pkid));
                if !self.awaiting_pubrel.get_or_insert_with(Box::default).insert(publish.pkid) {
                    debug!(pkid = publish.pkid, "QoS 2 PUBLISH re-sent before PUBREL: not routed again");
                    return;
                }
                crate::stats::inflight_in_changed(1);
                // Submitted before the batch's Route: the router's wait for the commit of what
                // it stores for the message covers this too.
                let pkid = publish.pkid;
                self.save(|client_id| Some(Change::IncomingAdded { client_id, pkid }));
            }
        }
        publish.dup = false;
        self.queue_for_routing(publish);
    }

    fn queue_for_routing(&mut self, publish: Publish) {
        if publish.topic.starts_with('$') {
            // `$` topics belong to the server; clients cannot publish to them.
            debug!(topic = %publish.topic, "PUBLISH to a `$` topic not routed");
            return;
        }
        self.publishing().to_route.push(publish);
    }

    fn publishing(&mut self) -> &mut Publishing {
        self.publishing.get_or_insert_with(Box::default)
    }

    fn release_publishing_if_idle(&mut self) {
        if self.publishing.as_ref().is_some_and(|publishing| publishing.is_idle()) {
            self.publishing = None;
        }
    }

    fn owe(&mut self, ack: Ack) {
        let publishing = self.publishing();
        publishing.unrouted_acks.push_back(ack);
        publishing.acks_in_batch += 1;
    }

    fn route_pending(&mut self, ctx: &mut Context<Self>) {
        let registered = self.client.is_some() && self.conn.is_some();
        let Some(publishing) = self.publishing.as_mut() else { return };
        if publishing.to_route.is_empty() && publishing.acks_in_batch == 0 {
            return;
        }
        let batch = std::mem::take(&mut publishing.to_route);
        if !registered {
            // A will, or the last words of a closing connection: nobody waits for an answer.
            self.shared.router.do_send(router::Route { from: None, acks: 0, batch });
            return;
        }
        let acks = std::mem::take(&mut publishing.acks_in_batch);
        publishing.routes_in_flight = publishing.routes_in_flight.saturating_add(1);
        self.update_gate();
        match self.topic_check(&batch, |publish| &publish.topic, Action::Publish) {
            // A refused message is acknowledged like any other, and not routed.
            Checked::Done(allowed) => self.send_route(keep_allowed(batch, allowed), acks, ctx),
            Checked::Waiting(check) => {
                ctx.wait(check.into_actor(self).map(move |allowed, act, ctx| {
                    act.send_route(keep_allowed(batch, Some(allowed)), acks, ctx);
                }));
            }
        }
    }

    fn send_route(&mut self, batch: Vec<Publish>, acks: u32, ctx: &mut Context<Self>) {
        let plugins = &self.shared.plugins;
        if plugins.events().interests().messages {
            for publish in &batch {
                plugins.emit(Event::MessageReceived {
                    client_id: self.client_id.to_string(),
                    topic: publish.topic.to_string(),
                    payload: publish.payload.clone(),
                    qos: publish.qos.into(),
                    retain: publish.retain,
                });
            }
        }
        self.shared.router.do_send(router::Route { from: Some(ctx.address()), acks, batch });
    }

    /// Asks the topic-check plugins about `items` when topic checks are enabled. Plugins that
    /// answer without waiting (the built-in ones) are answered here and now; only a plugin that
    /// really waits makes the session wait, in order, for its answer.
    fn topic_check<T>(&self, items: &[T], topic: impl Fn(&T) -> &str, action: Action) -> Checked {
        let Some(client) = self.client_info.as_ref().filter(|_| self.shared.plugins.topic_checks_enabled()) else {
            return Checked::Done(None);
        };
        if items.is_empty() {
            return Checked::Done(None);
        }
        let topics = items.iter().map(|item| topic(item).to_string()).collect();
        let mut check = Box::pin(self.shared.plugins.check_topics(client.clone(), topics, action));
        match (&mut check).now_or_never() {
            Some(allowed) => Checked::Done(Some(allowed)),
            None => Checked::Waiting(check),
        }
    }

    fn on_subscribe(&mut self, generation: u64, subscribe: Subscribe, ctx: &mut Context<Self>) {
        let over_limits = self.filters_over_topic_limits(&subscribe.filters);
        let checked = self.topic_check(&subscribe.filters, |filter| &filter.filter, Action::Subscribe);
        let send = move |act: &mut Session, refused: Option<Vec<bool>>| {
            let refused: Vec<bool> =
                refused.map(|allowed| allowed.into_iter().map(|ok| !ok).collect()).unwrap_or_default();
            if refused.contains(&true) {
                conn_event!(
                    info,
                    act,
                    refused = refused.iter().filter(|r| **r).count(),
                    "subscription refused by topic check"
                );
            }
            let refused = match (refused, over_limits) {
                (refused, over) if over.is_empty() => refused,
                (refused, over) if refused.is_empty() => over,
                (refused, over) => refused.into_iter().zip(over).map(|(checked, over)| checked || over).collect(),
            };
            act.shared.router.do_send(router::Subscribe {
                client_id: act.client_id.clone(),
                generation,
                pkid: subscribe.pkid,
                filters: subscribe.filters,
                refused,
            });
        };
        match checked {
            Checked::Done(allowed) => send(self, allowed),
            Checked::Waiting(check) => {
                ctx.wait(check.into_actor(self).map(move |allowed, act, _ctx| send(act, Some(allowed))));
            }
        }
    }

    /// Which filters of a SUBSCRIBE are over `max-topic-length` or `max-topic-levels` (they are
    /// answered 0x80), by position; empty, without allocating, when none is. Logged and counted
    /// once per packet, however many filters it refuses.
    fn filters_over_topic_limits(&self, filters: &[SubscribeFilter]) -> Vec<bool> {
        let limits = self.settings().topic_limits;
        let mut over = Vec::new();
        let (mut too_long, mut too_deep) = (0, 0);
        let mut first = None;
        for (index, filter) in filters.iter().enumerate() {
            let Err(exceeded) = limits.check(&filter.filter) else { continue };
            match exceeded {
                TopicLimitExceeded::TooLong { .. } => too_long += 1,
                TopicLimitExceeded::TooManyLevels { .. } => too_deep += 1,
            }
            first.get_or_insert(exceeded);
            over.resize(filters.len(), false);
            over[index] = true;
        }
        if let Some(first) = first {
            self.shared.stats.topics_too_long(too_long);
            self.shared.stats.topic_levels_exceeded(too_deep);
            conn_event!(warn, self, refused = too_long + too_deep, first = %first, "SUBSCRIBE filters refused (0x80)");
        }
        over
    }

    /// Reads from the client only while the router keeps up with it and no subscriber of its
    /// messages asked it to wait.
    fn update_gate(&self) {
        let routes_in_flight = self.publishing.as_ref().map_or(0, |publishing| publishing.routes_in_flight);
        if let Some(conn) = &self.conn {
            if routes_in_flight >= MAX_ROUTES_IN_FLIGHT {
                conn.gate.pause();
            } else {
                conn.gate.resume();
            }
        }
    }

    fn write(&mut self, packet: Packet) {
        if let Some(conn) = &mut self.conn {
            conn.write(&packet);
        }
    }

    /// Moves queued messages into the write buffer while the in-flight window and the buffer's
    /// high-water mark allow. The caller flushes.
    fn pump(&mut self) {
        if self.client.is_none() {
            return;
        }
        while self.conn.as_ref().is_some_and(|conn| conn.buffered() < WRITE_HIGH_WATER) {
            let Some((publish, seq)) = self.outbound.next_to_send(self.shared.limits) else { break };
            if seq != 0 && publish.qos != QoS::AtMostOnce {
                // Its packet id is kept: after a restart it goes again with the same one
                // [MQTT-4.4.0-1], which is what keeps QoS 2 exactly once.
                self.save(|client_id| {
                    let message = StoredMessage {
                        state: MessageState::Sent { pkid: publish.pkid },
                        qos: publish.qos,
                        retain: publish.retain,
                        topic: publish.topic.clone(),
                        payload: publish.payload.clone(),
                    };
                    Some(Change::MessageSaved { client_id, seq, message })
                });
            }
            if let Some(conn) = &mut self.conn {
                conn.write(&Packet::Publish(publish));
            }
        }
    }

    /// The storage writer, when persistence is on and this session is a persistent one.
    fn storage(&self) -> Option<&StorageHandle> {
        self.shared.storage.as_ref().filter(|_| self.client.as_ref().is_some_and(|client| !client.clean_session))
    }

    /// Saves a change of this session's durable state (fire and forget: a publisher that needs
    /// it durable first waits at the router).
    fn save(&self, change: impl FnOnce(ByteString) -> Option<Change>) {
        if let (Some(storage), Some(client)) = (self.storage(), &self.client) {
            if let Some(change) = change(self.client_id.clone()) {
                storage.submit_from_session(client.generation, vec![change]);
            }
        }
    }

    fn save_message_done(&self, seq: u64) {
        if seq != 0 {
            self.save(|client_id| Some(Change::MessageRemoved { client_id, seq }));
        }
    }

    /// Tells the router, every `step` messages this session lets go (writes to the socket or
    /// drops), how many it has received and how many of them are still queued: from that and
    /// what it sent since, the router bounds this session's backlog and holds publishers back
    /// before the queue could overflow (see `router::admission`). Reports are amortised over
    /// `step` messages, so a subscriber that keeps up costs the router one small message per
    /// `step` deliveries.
    fn report_drained(&mut self) {
        let Some(client) = &self.client else { return };
        let queued = self.outbound.queued_len() as u32;
        let gone = self.received.wrapping_sub(queued);
        if (gone.wrapping_sub(self.reported_gone) as i32) < self.shared.admission_step as i32 {
            return;
        }
        self.reported_gone = gone;
        let progress = router::Progress { received: self.received, queued };
        self.shared.router.do_send(router::Drained {
            client_id: self.client_id.clone(),
            generation: client.generation,
            progress,
        });
    }

    fn write_routed_acks(&mut self, acks: u32) {
        let Some(publishing) = self.publishing.as_mut() else { return };
        for _ in 0..acks {
            let Some(ack) = publishing.unrouted_acks.pop_front() else { break };
            if let Some(conn) = &mut self.conn {
                conn.write(&ack.packet());
            }
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        // Every handler ends here: what it tallied for the statistics is shared now, connected
        // or not (a parked session queues too).
        self.shared.stats.publish_local();
        let Some(conn) = &mut self.conn else { return };
        let Some(write) = conn.start_flush() else { return self.drain_progress(ctx) };
        ctx.spawn(write.into_actor(self).map(|done, act, ctx| {
            let _entered = act.span().entered();
            let Some(conn) = &mut act.conn else { return };
            match conn.finish_flush(done) {
                Err(error) => act.close(ctx, Close::Io(error)),
                Ok(true) => act.finish_close(ctx),
                Ok(false) => {
                    act.pump();
                    act.report_drained();
                    act.flush(ctx);
                }
            }
        }));
    }

    /// Disconnects a client that has been silent for 1.5 times its keep-alive (plus the
    /// configured grace) [MQTT-3.1.2-24].
    fn check_keep_alive(&mut self, timeout: Duration, ctx: &mut Context<Self>) {
        if self.last_activity.elapsed() >= timeout {
            return self.close(ctx, Close::KeepAliveTimeout(timeout));
        }
        keepalive::watch(ctx.address().downgrade(), keepalive::Deadline::KeepAlive, self.last_activity + timeout);
    }

    fn close(&mut self, ctx: &mut Context<Self>, reason: Close) {
        if self.conn.is_none() {
            return;
        }
        // The client closing in answer to a shutdown's goodbye is how draining is meant to end.
        let reason = if self.draining() && matches!(reason, Close::PeerClosed) { Close::ShutDown } else { reason };
        match &reason {
            Close::Disconnect => conn_event!(info, self, "client disconnected"),
            Close::PeerClosed => conn_event!(info, self, "connection closed by the client without DISCONNECT"),
            Close::Io(error) => conn_event!(info, self, %error, "connection lost"),
            Close::Malformed(DecodeError::PacketTooLarge { size, max }) => {
                // Still counted as a protocol error too, as before there was a counter of its own.
                self.shared.stats.protocol_error();
                self.shared.stats.packet_too_large();
                conn_event!(
                    warn,
                    self,
                    size,
                    max_packet_size = max,
                    "packet larger than max-packet-size: closing the connection without reading it"
                );
            }
            Close::Malformed(error) => {
                self.shared.stats.protocol_error();
                conn_event!(warn, self, %error, "malformed packet: closing the connection");
            }
            Close::ProtocolViolation(what) => {
                self.shared.stats.protocol_error();
                conn_event!(warn, self, violation = what, "protocol violation: closing the connection");
            }
            Close::KeepAliveTimeout(timeout) => {
                conn_event!(info, self, ?timeout, "keep-alive expired: closing the connection")
            }
            Close::ConnectTimeout => {
                self.shared.stats.connect_timed_out();
                conn_event!(
                    warn,
                    self,
                    timeout = ?self.settings().connect_timeout,
                    "no CONNECT within connect-timeout: closing the connection"
                )
            }
            Close::TopicLimit(exceeded) => {
                exceeded.count(&self.shared.stats, 1);
                conn_event!(warn, self, %exceeded, "closing the connection");
            }
            Close::Refused(code) => conn_event!(info, self, %code, "connection refused"),
            Close::TakenOver => {
                conn_event!(info, self, "connection taken over by a new connection with the same client id")
            }
            Close::ServerUnavailable => conn_event!(warn, self, "router unavailable: closing the connection"),
            Close::StorageFailed => {
                conn_event!(error, self, "persistence failed: closing the connection without acknowledging")
            }
            // One line per connection at debug only: the broker logs the shutdown as a whole.
            Close::ShutDown => debug!("broker shutting down: connection closed"),
        }
        if self.client.is_some() {
            if let Some(client) = self.client_info.as_ref().filter(|_| self.shared.plugins.events().interests().clients)
            {
                self.shared.plugins.emit(Event::ClientDisconnected { client: client.clone() });
            }
        }
        let will = self.will.take();
        if reason.publishes_will() && self.client.is_some() {
            if let Some(will) = will.map(|will| *will) {
                // The will goes out on every close but DISCONNECT [MQTT-3.1.2-8].
                debug!(topic = %will.topic, "publishing will message");
                self.queue_for_routing(Publish {
                    dup: false,
                    qos: will.qos,
                    retain: will.retain,
                    topic: will.topic,
                    pkid: 0,
                    payload: will.message,
                });
            }
        }
        self.route_pending(ctx);
        let flush_first = matches!(reason, Close::Refused(_) | Close::ServerUnavailable);
        if let Some(conn) = &mut self.conn {
            if flush_first && conn.close_after_flush(ctx) {
                // finish_close runs once the refusing CONNACK has been written.
                self.flush(ctx);
                return;
            }
        }
        if let Some(conn) = self.conn.take() {
            conn.shutdown(ctx, &self.shared.stats);
        }
        if !matches!(reason, Close::TakenOver) {
            self.park_or_stop(ctx);
        }
    }

    /// Called when a connection that waited for its last write can close.
    fn finish_close(&mut self, ctx: &mut Context<Self>) {
        if let Some(conn) = self.conn.take() {
            conn.shutdown(ctx, &self.shared.stats);
        }
        self.park_or_stop(ctx);
    }

    /// After the connection is gone: a persistent session waits for its client to come back,
    /// anything else ends.
    fn park_or_stop(&mut self, ctx: &mut Context<Self>) {
        match &self.client {
            Some(client) if !client.clean_session => {
                let generation = client.generation;
                self.shared.router.do_send(router::Parked { client_id: self.client_id.clone(), generation });
                if let Some(expiry) = self.shared.session_expiry {
                    self.expire_after(expiry, ctx);
                }
                let dropped = self.outbound.discard_queued_qos0();
                // Until a TakeOver (see there): `$SYS/broker/clients/disconnected`.
                self.shared.stats.session_parked();
                self.shared.stats.publish_local();
                debug!(
                    inflight = self.outbound.inflight_len(),
                    queued = self.outbound.queued_len(),
                    dropped_qos0 = dropped,
                    "persistent session kept for the client's return"
                );
            }
            Some(client) => {
                self.shared
                    .router
                    .do_send(router::Unregister { client_id: self.client_id.clone(), generation: client.generation });
                ctx.stop();
            }
            None => ctx.stop(),
        }
    }

    /// Counts a message the full queue could not take (a thread-local tally: drops come at the
    /// rate of the flood that causes them) and logs the start of a burst of them.
    fn count_drop(&mut self, dropped: Dropped) {
        crate::stats::count_dropped();
        if self.dropped == 0 {
            conn_event!(
                warn,
                self,
                max_queued_messages = self.settings().max_queued_messages,
                ?dropped,
                "session queue full (max-queued-messages): dropping messages until it drains"
            );
        } else {
            debug!(?dropped, "session queue full: message dropped");
        }
        self.dropped = self.dropped.saturating_add(1);
    }

    /// Ends a burst of drops, with a log line that counts them, once the queue has room for
    /// half of `max-queued-messages` again (or the session ends): a client hovering at the limit
    /// does not start a new burst with every message.
    fn end_drop_burst(&mut self, ending: bool) {
        if self.dropped == 0 || !ending && self.outbound.queued_len() > self.settings().max_queued_messages / 2 {
            return;
        }
        conn_event!(warn, self, dropped = self.dropped, "end of a burst of messages dropped from a full session queue");
        self.dropped = 0;
    }
}

/// A client id for a client that sent an empty one with clean session 1: unique within this
/// process, unlikely to collide with ids chosen by clients.
fn generate_client_id() -> ByteString {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    ByteString::from(format!("amqtt-{:016x}", hasher.finish()))
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _entered = self.span().entered();
        if self.conn.is_none() {
            // Restored from the store: nothing to wait for but its client (or its expiry).
            return;
        }
        debug!("connection accepted");
        let deadline = Instant::now() + self.settings().connect_timeout;
        keepalive::watch(ctx.address().downgrade(), keepalive::Deadline::Connect, deadline);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.end_drop_burst(true);
        // Messages still held (not handed over) leave the in-flight and queued gauges now.
        if let Some(awaiting) = self.awaiting_pubrel.take() {
            crate::stats::inflight_in_changed(-(awaiting.len() as i64));
        }
        self.outbound = Outbound::default();
        self.shared.stats.publish_local();
    }
}

impl StreamHandler<Result<Bytes, ReadError>> for Session {
    fn handle(&mut self, item: Result<Bytes, ReadError>, ctx: &mut Self::Context) {
        if self.conn.as_ref().is_none_or(Connection::is_closing) {
            // Nothing received after a refused CONNECT is processed [MQTT-3.1.4-5].
            return;
        }
        let _entered = self.span().entered();
        self.last_activity = Instant::now();
        match item {
            Ok(frames) => self.process(frames, ctx),
            Err(ReadError::Io(error)) => self.close(ctx, Close::Io(error)),
            Err(ReadError::Malformed(error)) => self.close(ctx, Close::Malformed(error)),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        let _entered = self.span().entered();
        self.close(ctx, Close::PeerClosed);
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, Deliver { batch, seqs }: Deliver, ctx: &mut Self::Context) {
        let _entered = self.span().entered();
        // Refused deliveries are left out for this subscriber only.
        match self.topic_check(&batch, |publish| &publish.topic, Action::Receive) {
            Checked::Done(allowed) => self.enqueue(batch, seqs, allowed, ctx),
            Checked::Waiting(check) => {
                ctx.wait(check.into_actor(self).map(move |allowed, act, ctx| {
                    act.enqueue(batch, seqs, Some(allowed), ctx);
                }));
            }
        }
    }
}

impl Session {
    /// Queues what the router delivered (`seqs`: see `Deliver`), leaving out what the topic
    /// checks did not allow.
    fn enqueue(&mut self, batch: Vec<Publish>, seqs: Vec<u64>, allowed: Option<Vec<bool>>, ctx: &mut Context<Self>) {
        let online = self.conn.is_some();
        self.received = self.received.wrapping_add(batch.len() as u32);
        for (index, publish) in batch.into_iter().enumerate() {
            let seq = seqs.get(index).copied().unwrap_or(0);
            if allowed.as_ref().is_some_and(|allowed| !allowed[index]) {
                self.save_message_done(seq);
                continue;
            }
            // An offline session keeps QoS 1 and 2 messages only [MQTT-3.1.2-5].
            if !online && publish.qos == QoS::AtMostOnce {
                continue;
            }
            if let Some(dropped) = self.outbound.enqueue(publish, seq, self.shared.limits) {
                if let Dropped::Incoming { seq, .. } = &dropped {
                    self.save_message_done(*seq);
                }
                self.count_drop(dropped);
            } else if self.dropped != 0 {
                self.end_drop_burst(false);
            }
            // Moved on to the write buffer as they come, so a batch larger than
            // `max-queued-messages` does not overflow the queue of a client that keeps up.
            self.pump();
        }
        self.report_drained();
        self.flush(ctx);
    }
}

impl Handler<SubscribeDone> for Session {
    type Result = ();

    fn handle(&mut self, msg: SubscribeDone, ctx: &mut Self::Context) {
        if msg.over_limit > 0 {
            self.shared.stats.subscriptions_refused(u64::from(msg.over_limit));
            conn_event!(
                warn,
                self,
                refused = msg.over_limit,
                "SUBSCRIBE filters refused (0x80): max-subscriptions-per-client reached"
            );
        }
        self.write(Packet::SubAck(SubAck { pkid: msg.pkid, return_codes: msg.return_codes }));
        self.flush(ctx);
    }
}

impl Handler<UnsubscribeDone> for Session {
    type Result = ();

    fn handle(&mut self, msg: UnsubscribeDone, ctx: &mut Self::Context) {
        self.write(Packet::UnsubAck(UnsubAck { pkid: msg.pkid }));
        self.flush(ctx);
    }
}

impl Handler<keepalive::DeadlineReached> for Session {
    type Result = ();

    fn handle(&mut self, keepalive::DeadlineReached(deadline): keepalive::DeadlineReached, ctx: &mut Self::Context) {
        if self.conn.is_none() {
            return;
        }
        match (deadline, &self.client) {
            (keepalive::Deadline::Connect, None) => {
                let _entered = self.span().entered();
                self.close(ctx, Close::ConnectTimeout);
            }
            (keepalive::Deadline::KeepAlive, Some(_)) => {
                if let Some(timeout) = self.keep_alive_timeout() {
                    let _entered = self.span().entered();
                    self.check_keep_alive(timeout, ctx);
                }
            }
            _ => {}
        }
    }
}

impl Handler<Routed> for Session {
    type Result = ();

    fn handle(&mut self, msg: Routed, ctx: &mut Self::Context) {
        if !msg.stored {
            return self.close(ctx, Close::StorageFailed);
        }
        let publishing = self.publishing();
        publishing.routes_in_flight = publishing.routes_in_flight.saturating_sub(1);
        self.write_routed_acks(msg.acks);
        self.update_gate();
        self.flush(ctx);
        self.release_publishing_if_idle();
    }
}

impl Handler<TakeOver> for Session {
    type Result = MessageResult<TakeOver>;

    fn handle(&mut self, msg: TakeOver, ctx: &mut Self::Context) -> Self::Result {
        let _entered = self.span().entered();
        if self.conn.is_none() && self.client.as_ref().is_some_and(|client| !client.clean_session) {
            // Counted when it was parked (see `park_or_stop`).
            self.shared.stats.session_unparked();
        }
        self.close(ctx, Close::TakenOver);
        if let (Some(storage), Some(client)) = (self.storage(), &self.client) {
            // This session stores nothing more: a fence the takeover put up can come down.
            storage.retire(self.client_id.clone(), client.generation);
        }
        // The router already points the client id at the new connection.
        self.client = None;
        ctx.stop();
        MessageResult(msg.keep_state.then(|| SessionState {
            outbound: std::mem::take(&mut self.outbound),
            awaiting_pubrel: self.awaiting_pubrel.take().map(|awaiting| *awaiting).unwrap_or_default(),
        }))
    }
}
