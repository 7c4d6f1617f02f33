//! The connection driver: one tokio task per connected client. It owns the socket and the
//! session state; the `MqttClient` handles talk to it through a command channel and get their
//! answers through oneshot channels, so any number of clones can publish at once without locks
//! on the hot path.
//!
//! The task's life: connect (with retries), serve the connection, and when the connection is
//! lost reconnect and resume the session (re-subscribe, re-send in-flight messages) until it is
//! told to stop or runs out of retries. Its return value is the session state, which the handle
//! keeps for a later `connect` with `cleansession: false`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use amqtt_protocol::{
    ByteString, ConnectReturnCode, LastWill, MqttCodec, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
    Subscribe, SubscribeFilter, SubscribeReturnCode, Unsubscribe, MAX_REMAINING_LENGTH,
};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tracing::{debug, error, info, warn};

use crate::session::{Outgoing, Reply, Request, SessionState, Undelivered};
use crate::transport::{ConnectError, Connector, Transport};
use crate::{ClientConfig, ClientError, Message};

/// QoS 1/2 publishes in flight at once; more wait in order. Large enough to fill a fast link,
/// small enough that a reconnection re-sends a bounded amount.
pub(crate) const INFLIGHT_WINDOW: usize = 64;
/// Once this much is waiting to be written, the driver stops taking commands and reading the
/// socket until the socket takes some: back-pressure toward publishers, and batching.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Filters per SUBSCRIBE when re-subscribing after a reconnection.
const RESUBSCRIBE_BATCH: usize = 100;
/// How long the TLS / WebSocket handshakes, and then the CONNACK, may each take when
/// `connection_timeout` is not set (aMQTT's default).
const DEFAULT_CONNACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `disconnect()` waits for what is buffered (DISCONNECT included) to be written.
const DISCONNECT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest wait between two connection attempts, whatever `reconnect_max_interval` says, so
/// that retrying forever against a refusing host cannot become a busy loop.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// What the API asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        message: Message,
        reply: Reply<Message>,
    },
    Subscribe {
        filters: Vec<(String, QoS)>,
        reply: Reply<Vec<SubscribeReturnCode>>,
    },
    Unsubscribe {
        filters: Vec<String>,
        reply: Reply<()>,
    },
    Disconnect {
        reply: oneshot::Sender<()>,
    },
    /// Test only: close the socket without DISCONNECT and stop, as a crash would.
    Abort {
        reply: oneshot::Sender<()>,
    },
    /// Test only: close the socket without DISCONNECT and reconnect, as a network failure would.
    DropConnection,
}

/// Where the driver is, for `deliver_message` and the API calls that need a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Never connected.
    Idle,
    Connecting,
    Connected,
    Reconnecting,
    /// The driver ended: `lost` when the connection was lost for good (rather than closed by
    /// `disconnect()` or a failed first connection).
    Closed {
        lost: bool,
    },
}

/// What a driver connects with, fixed for its lifetime.
#[derive(Debug)]
pub(crate) struct Settings {
    pub client_id: String,
    pub config: Arc<ClientConfig>,
    /// The URL as given, for messages.
    pub url: String,
    /// Opens the stream under MQTT (TCP, TLS, WebSocket).
    pub connector: Connector,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Why the driver stops on request.
enum Stop {
    Disconnect(oneshot::Sender<()>),
    Abort(oneshot::Sender<()>),
    /// Every `MqttClient` handle is gone.
    HandleDropped,
}

/// How a connection ended.
enum End {
    Stop(Stop),
    Lost(String),
}

/// Why no connection could be made.
enum Failure {
    Stopped(Stop),
    Error(ClientError),
}

/// What one connection attempt can end with.
enum AttemptError {
    /// Worth another attempt.
    Retry(io::Error),
    Refused(ConnectReturnCode),
    /// Another attempt would fail the same way (an untrusted certificate, say).
    Fatal(ClientError),
}

impl From<ConnectError> for AttemptError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Retry(error) => AttemptError::Retry(error),
            ConnectError::Fatal(error) => AttemptError::Fatal(error),
        }
    }
}

/// An established MQTT connection: CONNACK received.
struct Connection {
    stream: Transport,
    /// Bytes read after the CONNACK (the broker may send queued messages right behind it).
    rbuf: BytesMut,
    session_present: bool,
}

pub(crate) struct Driver {
    settings: Arc<Settings>,
    commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Message>,
    status: Arc<watch::Sender<Status>>,
    state: SessionState,
    /// Commands received while there was no connection, run once there is one.
    deferred: VecDeque<Command>,
    codec: MqttCodec,
    /// When the PINGREQ still unanswered was sent.
    ping_sent: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        settings: Arc<Settings>,
        commands: mpsc::Receiver<Command>,
        incoming: mpsc::Sender<Message>,
        status: Arc<watch::Sender<Status>>,
        state: SessionState,
    ) -> Driver {
        Driver {
            settings,
            commands,
            incoming,
            status,
            state,
            deferred: VecDeque::new(),
            // A client takes whatever its broker sends, up to what MQTT can encode; only the packet
            // being read is ever reserved.
            codec: MqttCodec::new(MAX_REMAINING_LENGTH + 5),
            ping_sent: None,
        }
    }

    /// Connects, then serves and reconnects until stopped; `ready` gets the first connection's
    /// outcome (session present, or why it failed).
    pub(crate) async fn run(mut self, ready: oneshot::Sender<Result<bool, ClientError>>) -> SessionState {
        let config = self.settings.config.clone();
        let retries = if config.auto_reconnect { config.reconnect_retries } else { 0 };
        self.status.send_replace(Status::Connecting);
        let mut connection = match self.establish(retries, false).await {
            Ok(connection) => {
                info!(url = %self.settings.url, session_present = connection.session_present, "connected");
                let _ = ready.send(Ok(connection.session_present));
                connection
            }
            Err(Failure::Stopped(stop)) => {
                let _ = ready.send(Err(ClientError::Disconnected));
                return self.finish(Some(stop), false);
            }
            Err(Failure::Error(error)) => {
                warn!(%error, "connection failed");
                let _ = ready.send(Err(error));
                return self.finish(None, false);
            }
        };
        loop {
            self.status.send_replace(Status::Connected);
            let reason = match self.serve(connection).await {
                End::Stop(stop) => return self.finish(Some(stop), false),
                End::Lost(reason) => reason,
            };
            if retries == 0 {
                warn!(%reason, "connection lost; not reconnecting (auto_reconnect is off or reconnect_retries is 0)");
                return self.finish(None, true);
            }
            warn!(%reason, "connection lost, reconnecting");
            self.status.send_replace(Status::Reconnecting);
            connection = match self.establish(retries, true).await {
                Ok(connection) => {
                    info!(session_present = connection.session_present, "reconnected");
                    connection
                }
                Err(Failure::Stopped(stop)) => return self.finish(Some(stop), false),
                Err(Failure::Error(error)) => {
                    error!(%error, "giving up reconnecting");
                    return self.finish(None, true);
                }
            };
        }
    }

    /// Ends the driver: every waiting caller gets an error, the status says closed, and the
    /// session state goes back to the handle.
    fn finish(mut self, stop: Option<Stop>, lost: bool) -> SessionState {
        let error = || if lost { ClientError::Disconnected } else { ClientError::NotConnected };
        self.state.fail_waiting_callers(error);
        for command in self.deferred.drain(..) {
            fail_command(command, error());
        }
        self.status.send_replace(Status::Closed { lost });
        match stop {
            Some(Stop::Disconnect(reply) | Stop::Abort(reply)) => {
                let _ = reply.send(());
            }
            Some(Stop::HandleDropped) | None => {}
        }
        self.state
    }

    /// Makes a connection: at most `retries` further attempts after the first (one fewer when
    /// `reconnecting`, where the first attempt was the connection just lost), negative meaning
    /// forever, waiting 1, 2, 4... seconds (capped at `reconnect_max_interval`) between them.
    /// A refusal is final: the same CONNECT would be refused again.
    async fn establish(&mut self, retries: i32, reconnecting: bool) -> Result<Connection, Failure> {
        let max_attempts = u32::try_from(retries).ok().map(|r| if reconnecting { r } else { r + 1 });
        let max_interval = Duration::from_secs(self.settings.config.reconnect_max_interval);
        let settings = self.settings.clone();
        let mut attempts = 0u32;
        loop {
            // Before a reconnection too: the broker that just dropped us (a restart, a takeover by
            // another client with our id) deserves a moment.
            if reconnecting || attempts > 0 {
                let retry = if reconnecting { attempts } else { attempts - 1 };
                let delay = Duration::from_secs(1u64 << retry.min(20)).min(max_interval).max(MIN_RECONNECT_DELAY);
                debug!(?delay, "waiting before the next connection attempt");
                self.wait_or_stop(tokio::time::sleep(delay)).await.map_err(Failure::Stopped)?;
            }
            attempts += 1;
            match self.wait_or_stop(attempt(&settings)).await.map_err(Failure::Stopped)? {
                Ok(connection) => return Ok(connection),
                Err(AttemptError::Refused(code)) => return Err(Failure::Error(ClientError::Refused(code))),
                Err(AttemptError::Fatal(error)) => return Err(Failure::Error(error)),
                Err(AttemptError::Retry(source)) => {
                    warn!(attempt = attempts, error = %source, url = %settings.url, "connection attempt failed");
                    if max_attempts.is_some_and(|max| attempts >= max) {
                        let url = settings.url.clone();
                        return Err(Failure::Error(ClientError::Unreachable { url, attempts, source }));
                    }
                }
            }
        }
    }

    /// Runs `fut` while still answering commands: a stop request ends the wait, anything else
    /// is kept for when there is a connection.
    async fn wait_or_stop<F: Future>(&mut self, fut: F) -> Result<F::Output, Stop> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                output = &mut fut => return Ok(output),
                command = self.commands.recv() => match command {
                    None => return Err(Stop::HandleDropped),
                    Some(Command::Disconnect { reply }) => return Err(Stop::Disconnect(reply)),
                    Some(Command::Abort { reply }) => return Err(Stop::Abort(reply)),
                    Some(Command::DropConnection) => {}
                    Some(command) => self.deferred.push_back(command),
                },
            }
        }
    }

    /// Serves one connection until it ends. TCP is split without a lock and needs no flush;
    /// a TLS or WebSocket stream is split behind a lock and flushed after each write (a TLS
    /// record or WebSocket frame may wait inside it until then).
    async fn serve(&mut self, connection: Connection) -> End {
        let Connection { stream, rbuf, session_present } = connection;
        match stream {
            Transport::Tcp(mut tcp) => {
                let (reader, writer) = tcp.split();
                self.serve_on(reader, writer, false, rbuf, session_present).await
            }
            Transport::Layered(stream) => {
                let (reader, writer) = tokio::io::split(stream);
                self.serve_on(reader, writer, true, rbuf, session_present).await
            }
        }
    }

    async fn serve_on<R, W>(
        &mut self,
        mut reader: R,
        mut writer: W,
        flush_writes: bool,
        mut rbuf: BytesMut,
        session_present: bool,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Written and not flushed yet (only with `flush_writes`).
        let mut unflushed = false;
        let mut wbuf = BytesMut::with_capacity(4096);
        self.ping_sent = None;
        self.resume(session_present, &mut wbuf);
        while let Some(command) = self.deferred.pop_front() {
            if let Some(end) = self.handle_command(command, &mut wbuf) {
                return self.close(end, &mut writer, &mut wbuf).await;
            }
        }
        if let Err(reason) = self.process_buffered(&mut rbuf, &mut wbuf) {
            return End::Lost(reason);
        }

        let keep_alive = self.settings.config.keep_alive;
        let ping_delay = self.settings.config.ping_delay;
        // A PINGREQ goes out `ping_delay` seconds before the keep-alive would run out (or at its
        // end if the delay is not shorter than the keep-alive), and the PINGRESP may take a
        // whole keep-alive before the connection is deemed dead.
        let ping_interval =
            Duration::from_secs(u64::from(keep_alive.checked_sub(ping_delay).filter(|&s| s > 0).unwrap_or(keep_alive)));
        let pingresp_timeout = Duration::from_secs(u64::from(keep_alive));
        let mut last_write = Instant::now();

        loop {
            // Stop reading while received messages wait for room in the delivery channel (the
            // back-pressure reaches the broker through TCP) or while writes pile up.
            let reading = self.state.undelivered.is_empty() && wbuf.len() < WRITE_HIGH_WATER;
            let accepting = wbuf.len() < WRITE_HIGH_WATER;
            let deadline = match self.ping_sent {
                _ if keep_alive == 0 => None,
                Some(sent) => Some(sent + pingresp_timeout),
                None => Some(last_write + ping_interval),
            };
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(8 * 1024);
            }
            let delivery = self.incoming.clone();
            // `biased`: handing over messages and reading come first and writing last, so that
            // everything produced by one wake-up goes out in one write.
            tokio::select! {
                biased;
                permit = delivery.reserve_owned(), if !self.state.undelivered.is_empty() => {
                    let undelivered = self.state.undelivered.pop_front();
                    if let (Some(Undelivered { message, ack }), Ok(permit)) = (undelivered, permit) {
                        permit.send(message);
                        if let Some(ack) = ack {
                            self.send_ack(ack, &mut wbuf);
                        }
                    }
                    if let Err(reason) = self.process_buffered(&mut rbuf, &mut wbuf) {
                        return End::Lost(reason);
                    }
                }
                read = reader.read_buf(&mut rbuf), if reading => match read {
                    Ok(0) => return End::Lost("the broker closed the connection".into()),
                    Ok(_) => {
                        if let Err(reason) = self.process_buffered(&mut rbuf, &mut wbuf) {
                            return End::Lost(reason);
                        }
                    }
                    Err(error) => return End::Lost(format!("read failed: {error}")),
                },
                command = self.commands.recv(), if accepting => {
                    let end = match command {
                        None => Some(End::Stop(Stop::HandleDropped)),
                        Some(command) => self.handle_command(command, &mut wbuf),
                    };
                    if let Some(end) = end {
                        return self.close(end, &mut writer, &mut wbuf).await;
                    }
                }
                written = write_or_flush(&mut writer, &mut wbuf), if !wbuf.is_empty() || unflushed => match written {
                    Ok(Some(0)) => return End::Lost("the connection closed while writing".into()),
                    Ok(Some(_)) => {
                        last_write = Instant::now();
                        unflushed = flush_writes;
                    }
                    Ok(None) => unflushed = false,
                    Err(error) => return End::Lost(format!("write failed: {error}")),
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    if self.ping_sent.is_none() {
                        encode(&Packet::PingReq, &mut wbuf);
                        self.ping_sent = Some(Instant::now());
                    } else if reading {
                        return End::Lost(format!("no PINGRESP within {keep_alive} s"));
                    } else {
                        // The PINGRESP may be waiting unread behind the messages we hold back.
                        self.ping_sent = None;
                    }
                }
            }
        }
    }

    /// Ends a connection on request: `disconnect()` sends DISCONNECT after everything already
    /// buffered, so no QoS 0 message accepted before it is lost; the test-only abort and the
    /// loss of every handle close the socket without it, like a crash (the broker then
    /// publishes the will [MQTT-3.1.2-8]).
    async fn close<W: AsyncWrite + Unpin>(&mut self, end: End, writer: &mut W, wbuf: &mut BytesMut) -> End {
        if let End::Stop(Stop::Disconnect(_)) = end {
            encode(&Packet::Disconnect, wbuf);
            let flush = async {
                writer.write_all_buf(wbuf).await?;
                writer.shutdown().await
            };
            match tokio::time::timeout(DISCONNECT_FLUSH_TIMEOUT, flush).await {
                Ok(Ok(())) => info!("disconnected"),
                Ok(Err(error)) => warn!(%error, "could not send DISCONNECT"),
                Err(_) => warn!("could not send DISCONNECT within {DISCONNECT_FLUSH_TIMEOUT:?}"),
            }
        }
        end
    }

    /// Restores the session on a new connection. Without a session on the broker (session
    /// present 0, always the case with clean session) the client subscribes again to everything
    /// it was subscribed to, which is what aMQTT forgets (its issue #149: a subscriber receives
    /// nothing after a reconnection); in every case unacknowledged publishes and requests are
    /// sent again [MQTT-4.4.0-1].
    fn resume(&mut self, session_present: bool, wbuf: &mut BytesMut) {
        if !session_present {
            // A new session: the broker forgot the QoS 2 ids it sent us and the acks we owed.
            self.state.incoming_qos2.clear();
            for undelivered in &mut self.state.undelivered {
                undelivered.ack = None;
            }
            // Our own earlier re-subscription is superseded by the one below.
            self.state.requests.retain(|_, request| !matches!(request, Request::Subscribe { reply: None, .. }));
        }
        let resend = self.state.packets_to_resend();
        if !session_present && !self.state.subscriptions.is_empty() {
            let subscriptions = self.state.subscriptions.clone();
            for batch in subscriptions.chunks(RESUBSCRIBE_BATCH) {
                let filters = batch
                    .iter()
                    .map(|(filter, qos)| SubscribeFilter { filter: filter.as_str().into(), qos: *qos })
                    .collect();
                let packet = Subscribe { pkid: self.state.next_id(), filters };
                encode(&Packet::Subscribe(packet.clone()), wbuf);
                let seq = self.state.next_seq();
                self.state.requests.insert(packet.pkid, Request::Subscribe { seq, packet, reply: None });
            }
            info!(filters = subscriptions.len(), "subscribing again: the broker has no session for this client");
        }
        if !resend.is_empty() {
            info!(packets = resend.len(), "re-sending unacknowledged packets");
        }
        for packet in &resend {
            encode(packet, wbuf);
        }
    }

    /// Runs one command; `Some` when it ends the connection.
    fn handle_command(&mut self, command: Command, wbuf: &mut BytesMut) -> Option<End> {
        match command {
            Command::Publish { message, reply } => self.publish(message, reply, wbuf),
            Command::Subscribe { filters, reply } => {
                let filters = filters
                    .into_iter()
                    .map(|(filter, qos)| SubscribeFilter { filter: ByteString::from(filter), qos })
                    .collect();
                let packet = Subscribe { pkid: self.state.next_id(), filters };
                encode(&Packet::Subscribe(packet.clone()), wbuf);
                let seq = self.state.next_seq();
                self.state.requests.insert(packet.pkid, Request::Subscribe { seq, packet, reply: Some(reply) });
            }
            Command::Unsubscribe { filters, reply } => {
                // Forgotten now, not at UNSUBACK: if the connection drops in between, the
                // re-subscription must not bring the subscription back.
                for filter in &filters {
                    self.state.forget_subscription(filter);
                }
                let filters = filters.into_iter().map(ByteString::from).collect();
                let packet = Unsubscribe { pkid: self.state.next_id(), filters };
                encode(&Packet::Unsubscribe(packet.clone()), wbuf);
                let seq = self.state.next_seq();
                self.state.requests.insert(packet.pkid, Request::Unsubscribe { seq, packet, reply: Some(reply) });
            }
            Command::Disconnect { reply } => return Some(End::Stop(Stop::Disconnect(reply))),
            Command::Abort { reply } => return Some(End::Stop(Stop::Abort(reply))),
            Command::DropConnection => return Some(End::Lost("connection dropped on request (test)".into())),
        }
        None
    }

    fn publish(&mut self, message: Message, reply: Reply<Message>, wbuf: &mut BytesMut) {
        if message.qos == QoS::AtMostOnce {
            // Nothing to wait for: done once it is in the write buffer (a `disconnect()` writes
            // that buffer out before its DISCONNECT).
            let publish = publish_packet(&message, 0);
            let _ = reply.send(match try_encode(&Packet::Publish(publish), wbuf) {
                Ok(()) => Ok(message),
                Err(error) => Err(error),
            });
        } else if self.state.outgoing.len() < INFLIGHT_WINDOW && self.state.waiting.is_empty() {
            self.start_flow(message, reply, wbuf);
        } else {
            self.state.waiting.push_back((message, reply));
        }
    }

    /// Sends a QoS 1/2 PUBLISH and tracks it until its last acknowledgement.
    fn start_flow(&mut self, message: Message, reply: Reply<Message>, wbuf: &mut BytesMut) {
        let pkid = self.state.next_id();
        let publish = publish_packet(&message, pkid);
        if let Err(error) = try_encode(&Packet::Publish(publish.clone()), wbuf) {
            let _ = reply.send(Err(error));
            return;
        }
        let seq = self.state.next_seq();
        self.state.outgoing.insert(pkid, Outgoing { seq, publish, released: false, reply: Some(reply) });
    }

    /// Starts waiting publishes while the window has room, skipping those whose caller gave up.
    fn admit_waiting(&mut self, wbuf: &mut BytesMut) {
        while self.state.outgoing.len() < INFLIGHT_WINDOW {
            let Some((message, reply)) = self.state.waiting.pop_front() else { break };
            if !reply.is_closed() {
                self.start_flow(message, reply, wbuf);
            }
        }
    }

    fn complete_flow(&mut self, pkid: u16, wbuf: &mut BytesMut) {
        if let Some(outgoing) = self.state.outgoing.remove(&pkid) {
            if let Some(reply) = outgoing.reply {
                let publish = outgoing.publish;
                let _ = reply.send(Ok(Message {
                    topic: publish.topic.to_string(),
                    payload: publish.payload,
                    qos: publish.qos,
                    retain: publish.retain,
                    dup: publish.dup,
                }));
            }
        }
        self.admit_waiting(wbuf);
    }

    /// Decodes and handles the packets in `rbuf`, stopping early while messages wait for room
    /// in the delivery channel (the rest stays buffered).
    fn process_buffered(&mut self, rbuf: &mut BytesMut, wbuf: &mut BytesMut) -> Result<(), String> {
        while self.state.undelivered.is_empty() {
            match self.codec.decode(rbuf) {
                Ok(Some(packet)) => self.handle_packet(packet, wbuf)?,
                Ok(None) => break,
                Err(error) => return Err(format!("invalid packet from the broker: {error}")),
            }
        }
        Ok(())
    }

    fn handle_packet(&mut self, packet: Packet, wbuf: &mut BytesMut) -> Result<(), String> {
        match packet {
            Packet::Publish(publish) => self.receive(publish, wbuf),
            Packet::PubAck(PubAck { pkid }) => match self.state.outgoing.get(&pkid) {
                Some(outgoing) if outgoing.publish.qos == QoS::AtLeastOnce => self.complete_flow(pkid, wbuf),
                _ => debug!(pkid, "PUBACK for no QoS 1 message in flight, ignored"),
            },
            Packet::PubRec(PubRec { pkid }) => match self.state.outgoing.get_mut(&pkid) {
                Some(outgoing) if outgoing.publish.qos == QoS::ExactlyOnce => {
                    // From here on the message is the broker's; only the PUBREL is ever re-sent.
                    outgoing.released = true;
                    encode(&Packet::PubRel(PubRel { pkid }), wbuf);
                }
                _ => debug!(pkid, "PUBREC for no QoS 2 message in flight, ignored"),
            },
            Packet::PubComp(PubComp { pkid }) => match self.state.outgoing.get(&pkid) {
                Some(outgoing) if outgoing.publish.qos == QoS::ExactlyOnce => self.complete_flow(pkid, wbuf),
                _ => debug!(pkid, "PUBCOMP for no QoS 2 message in flight, ignored"),
            },
            Packet::PubRel(PubRel { pkid }) => {
                // Answered even for an unknown id: it is the broker re-sending a PUBREL whose
                // PUBCOMP was lost [MQTT-4.3.3-2].
                self.state.incoming_qos2.remove(&pkid);
                encode(&Packet::PubComp(PubComp { pkid }), wbuf);
            }
            Packet::SubAck(suback) => match self.state.requests.remove(&suback.pkid) {
                Some(Request::Subscribe { packet, reply, .. }) => {
                    for (filter, code) in packet.filters.iter().zip(&suback.return_codes) {
                        match code {
                            SubscribeReturnCode::Success(_) => {
                                self.state.remember_subscription(&filter.filter, filter.qos)
                            }
                            SubscribeReturnCode::Failure if reply.is_none() => {
                                warn!(filter = %filter.filter, "the broker refused the subscription on re-subscribing")
                            }
                            SubscribeReturnCode::Failure => {}
                        }
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(suback.return_codes));
                    }
                }
                Some(other) => {
                    return Err(format!("SUBACK for packet id {} which is an UNSUBSCRIBE", other_id(&other)))
                }
                None => debug!(pkid = suback.pkid, "SUBACK for no SUBSCRIBE in flight, ignored"),
            },
            Packet::UnsubAck(unsuback) => match self.state.requests.remove(&unsuback.pkid) {
                Some(Request::Unsubscribe { reply, .. }) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Some(other) => return Err(format!("UNSUBACK for packet id {} which is a SUBSCRIBE", other_id(&other))),
                None => debug!(pkid = unsuback.pkid, "UNSUBACK for no UNSUBSCRIBE in flight, ignored"),
            },
            Packet::PingResp => self.ping_sent = None,
            other => return Err(format!("the broker sent {}, which only a client may send", other.packet_type())),
        }
        Ok(())
    }

    /// An application message from the broker. QoS 2 messages are delivered on PUBLISH and
    /// their id remembered until PUBREL, so a re-sent PUBLISH is not delivered twice.
    fn receive(&mut self, publish: Publish, wbuf: &mut BytesMut) {
        let pkid = publish.pkid;
        let ack = match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(PubAck { pkid })),
            QoS::ExactlyOnce => match self.state.incoming_qos2.get(&pkid) {
                Some(&acknowledged) => {
                    debug!(pkid, "duplicate QoS 2 message, not delivered again");
                    if acknowledged {
                        encode(&Packet::PubRec(PubRec { pkid }), wbuf);
                    }
                    return;
                }
                None => {
                    self.state.incoming_qos2.insert(pkid, false);
                    Some(Packet::PubRec(PubRec { pkid }))
                }
            },
        };
        let message = Message {
            topic: publish.topic.to_string(),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            dup: publish.dup,
        };
        if !self.state.undelivered.is_empty() {
            self.state.undelivered.push_back(Undelivered { message, ack });
            return;
        }
        // Acknowledged once handed over, not before: a message the application cannot take yet
        // stays the broker's responsibility.
        match self.incoming.try_send(message) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                if let Some(ack) = ack {
                    self.send_ack(ack, wbuf);
                }
            }
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.state.undelivered.push_back(Undelivered { message, ack });
            }
        }
    }

    fn send_ack(&mut self, ack: Packet, wbuf: &mut BytesMut) {
        if let Packet::PubRec(PubRec { pkid }) = ack {
            if let Some(acknowledged) = self.state.incoming_qos2.get_mut(&pkid) {
                *acknowledged = true;
            }
        }
        encode(&ack, wbuf);
    }
}

fn other_id(request: &Request) -> u16 {
    match request {
        Request::Subscribe { packet, .. } => packet.pkid,
        Request::Unsubscribe { packet, .. } => packet.pkid,
    }
}

fn fail_command(command: Command, error: ClientError) {
    match command {
        Command::Publish { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Command::Subscribe { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Command::Unsubscribe { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Command::Disconnect { reply } | Command::Abort { reply } => {
            let _ = reply.send(());
        }
        Command::DropConnection => {}
    }
}

fn publish_packet(message: &Message, pkid: u16) -> Publish {
    Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: ByteString::from(message.topic.as_str()),
        pkid,
        payload: message.payload.clone(),
    }
}

/// Appends a packet the driver built itself, which always encodes (every field within limits).
fn encode(packet: &Packet, wbuf: &mut BytesMut) {
    if let Err(error) = packet.write(wbuf) {
        error!(%error, packet = %packet.packet_type(), "could not encode a packet");
    }
}

/// Appends a packet built from the caller's data, which may be too large to encode.
fn try_encode(packet: &Packet, wbuf: &mut BytesMut) -> Result<(), ClientError> {
    packet.write(wbuf).map_err(|error| ClientError::Protocol(format!("cannot send {}: {error}", packet.packet_type())))
}

/// Writes what `wbuf` holds (`Some(bytes written)`), or flushes once it is empty (`None`).
async fn write_or_flush<W: AsyncWrite + Unpin>(writer: &mut W, wbuf: &mut BytesMut) -> io::Result<Option<usize>> {
    if wbuf.is_empty() {
        writer.flush().await.map(|()| None)
    } else {
        writer.write_buf(wbuf).await.map(Some)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One connection attempt: TCP (then TLS, WebSocket), CONNECT, CONNACK, each bounded by
/// `connection_timeout`.
async fn attempt(settings: &Settings) -> Result<Connection, AttemptError> {
    let config = &settings.config;
    let timed_out =
        |what: &str| AttemptError::Retry(io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out")));
    let limit = config.connection_timeout.unwrap_or(DEFAULT_CONNACK_TIMEOUT);
    let mut stream = settings.connector.connect(config.connection_timeout, limit).await?;

    let connect = amqtt_protocol::Connect {
        protocol_name: ByteString::from_static(amqtt_protocol::PROTOCOL_NAME),
        protocol_level: amqtt_protocol::PROTOCOL_LEVEL,
        clean_session: config.cleansession,
        keep_alive: config.keep_alive,
        client_id: ByteString::from(settings.client_id.as_str()),
        will: config.will.as_ref().map(|will| LastWill {
            topic: ByteString::from(will.topic.as_str()),
            message: will.message.clone(),
            qos: will.qos,
            retain: will.retain,
        }),
        username: settings.username.as_deref().map(ByteString::from),
        password: settings.password.as_ref().map(|p| bytes::Bytes::from(p.clone())),
    };
    let mut wbuf = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut wbuf)
        .map_err(|error| AttemptError::Retry(io::Error::new(io::ErrorKind::InvalidInput, error.to_string())))?;

    let handshake = async {
        stream.write_all_buf(&mut wbuf).await?;
        stream.flush().await?;
        let mut codec = MqttCodec::default();
        let mut rbuf = BytesMut::with_capacity(4096);
        loop {
            if let Some(packet) = codec.decode(&mut rbuf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                return match packet {
                    Packet::ConnAck(connack) => Ok((connack, rbuf)),
                    other => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the broker sent {} instead of CONNACK", other.packet_type()),
                    )),
                };
            }
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection before CONNACK",
                ));
            }
        }
    };
    let (connack, rbuf) = tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| timed_out("waiting for CONNACK"))?
        .map_err(|error| AttemptError::from(settings.connector.classify(error)))?;
    if connack.code != ConnectReturnCode::Accepted {
        return Err(AttemptError::Refused(connack.code));
    }
    Ok(Connection { stream, rbuf, session_present: connack.session_present })
}
