//! Test harness for the black-box tests in `tests/tests/`: starts a broker in-process on a free
//! port and talks to it through a raw MQTT client built on the protocol crate's codec, so each
//! test controls every byte and flag it sends.
//!
//! Modules: [`raw`] builds packets byte by byte, [`process`] runs the interop peers as child
//! processes, [`session_ops`] is the op model of the session fuzzing (target and test).

pub mod broker_process;
pub mod bystanders;
pub mod process;
pub mod raw;
pub mod session_ops;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

pub use amqtt_broker::{Broker, Config, RunningBroker};
pub use amqtt_protocol::*;
pub use bystanders::Bystanders;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long a test waits for something that should happen. Generous: it only matters when a
/// test is failing, since every wait ends on the awaited event.
pub const WAIT: Duration = Duration::from_secs(10);

/// The three QoS levels, for tests that go through every combination.
pub const QOS_ALL: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// A broker on 127.0.0.1 with a free port and the default settings.
pub fn start_broker() -> RunningBroker {
    start_broker_with("")
}

/// A broker configured by `yaml` (aMQTT schema) plus, unless the YAML has its own `listeners`,
/// one tcp listener on 127.0.0.1 with a free port.
///
/// Unless the YAML mentions `plugins` or `sys_interval`, the `$SYS` plugin is left out (by a
/// `plugins:` list of the other built-ins, as a user would): the retained
/// `$SYS/broker/version` it publishes shortly after start-up would otherwise race with the
/// retained-message counts that tests check.
pub fn start_broker_with(yaml: &str) -> RunningBroker {
    let mut yaml = if yaml.contains("listeners:") {
        yaml.to_string()
    } else {
        format!("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n{yaml}")
    };
    if !yaml.contains("plugins") && !yaml.contains("sys_interval") {
        yaml.push_str("plugins: [auth_anonymous, auth_file, topic_acl]\n");
    }
    let (config, warnings) = Config::from_yaml_str(&yaml, None).expect("test config must load");
    assert!(warnings.is_empty(), "unexpected config warnings: {warnings:?}");
    Broker::new(config).workers(2).start().expect("broker must start")
}

/// The address of the broker's first listener.
pub fn addr(broker: &RunningBroker) -> SocketAddr {
    broker.listeners()[0].addr
}

/// A CONNECT for MQTT 3.1.1 with keep-alive 60 s and nothing optional.
pub fn connect_packet(client_id: &str, clean_session: bool) -> Connect {
    Connect {
        protocol_name: ByteString::from_static("MQTT"),
        protocol_level: 4,
        clean_session,
        keep_alive: 60,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
    }
}

/// A PUBLISH exactly as given (`pkid` 0 for QoS 0), for tests that send it by hand rather than
/// through [`TestClient::publish`], e.g. to choose the packet id or leave the flow open.
pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS, retain: bool, pkid: u16) -> Publish {
    Publish { dup: false, qos, retain, topic: ByteString::from(topic), pkid, payload: Bytes::copy_from_slice(payload) }
}

/// A will message, for `Connect { will: Some(last_will(..)), ..connect_packet(..) }`.
pub fn last_will(topic: &str, message: &[u8], qos: QoS, retain: bool) -> LastWill {
    LastWill { topic: ByteString::from(topic), message: Bytes::copy_from_slice(message), qos, retain }
}

/// The topic of `publish` as a `&str`, for comparisons with string literals.
pub fn topic(publish: &Publish) -> &str {
    publish.topic.as_ref()
}

/// The payload of `publish` as text; fails the test if it is not UTF-8.
pub fn text(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.payload).expect("payloads in these tests are text")
}

/// Any byte stream a [`TestClient`] can speak MQTT over: TCP, or TLS or WebSocket around it.
pub trait TestStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> TestStream for T {}

/// A raw MQTT client: sends packets as given and returns what arrives, failing the test on a
/// timeout instead of hanging.
pub struct TestClient {
    framed: Framed<Box<dyn TestStream>, MqttCodec>,
    next_pkid: u16,
    /// Messages delivered to this client while `publish` waited for its own acknowledgement:
    /// a client subscribed to what it publishes may get the message before the PUBACK, since
    /// the broker acknowledges only once the message is routed. `recv` returns them first.
    early: std::collections::VecDeque<Packet>,
}

impl TestClient {
    /// Opens a TCP connection without sending anything.
    pub async fn connect_raw(addr: SocketAddr) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("cannot connect to the broker");
        stream.set_nodelay(true).unwrap();
        TestClient::over(stream)
    }

    /// A client over an established byte stream (a TLS or WebSocket connection) that has sent
    /// nothing yet.
    pub fn over(stream: impl TestStream + 'static) -> TestClient {
        TestClient {
            framed: Framed::new(Box::new(stream), MqttCodec::new(16 * 1024 * 1024)),
            next_pkid: 0,
            early: std::collections::VecDeque::new(),
        }
    }

    /// Connects and sends `connect`, returning the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (TestClient, ConnAck) {
        let mut client = TestClient::connect_raw(addr).await;
        client.send(connect).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with `client_id` and asserts the broker accepts; returns session-present.
    pub async fn connect(addr: SocketAddr, client_id: &str, clean_session: bool) -> (TestClient, bool) {
        TestClient::connect_accepted(addr, connect_packet(client_id, clean_session)).await
    }

    /// Connects with `connect` (a will, a keep-alive, a user name...) and asserts the broker
    /// accepts; returns session-present.
    pub async fn connect_accepted(addr: SocketAddr, connect: Connect) -> (TestClient, bool) {
        let client_id = connect.client_id.clone();
        let (client, connack) = TestClient::connect_with(addr, connect).await;
        assert_eq!(connack.code, ConnectReturnCode::Accepted, "CONNACK for {client_id}");
        (client, connack.session_present)
    }

    /// Sends `packet`; fails the test if the connection refuses the write.
    pub async fn send(&mut self, packet: impl Into<Packet>) {
        self.framed.send(packet.into()).await.expect("send failed");
    }

    /// Writes raw bytes, for malformed input.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        stream.write_all(bytes).await.expect("send failed");
    }

    /// The next packet from the broker; fails the test if none comes within `WAIT` or the
    /// connection closes.
    pub async fn recv(&mut self) -> Packet {
        if let Some(packet) = self.early.pop_front() {
            return packet;
        }
        self.recv_from_socket().await
    }

    async fn recv_from_socket(&mut self) -> Packet {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Ok(Some(Ok(packet))) => packet,
            Ok(Some(Err(error))) => panic!("receive failed: {error}"),
            Ok(None) => panic!("connection closed by the broker while a packet was expected"),
            Err(_) => panic!("no packet from the broker within {WAIT:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH; it is not acknowledged (see [`TestClient::ack`]).
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts that the broker closes the connection (without sending anything else first)
    /// within `WAIT`.
    pub async fn expect_closed(&mut self) {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Ok(None) | Ok(Some(Err(_))) => {}
            Ok(Some(Ok(packet))) => panic!("expected the connection to close, got {packet:?}"),
            Err(_) => panic!("connection still open after {WAIT:?}"),
        }
    }

    /// Whether the connection is closed once `after` has passed, for tests of timeouts.
    pub async fn closed_within(&mut self, after: Duration) -> bool {
        matches!(tokio::time::timeout(after, self.framed.next()).await, Ok(None) | Ok(Some(Err(_))))
    }

    /// A fresh packet identifier (1 to 65535, then around again) for this client's own flows.
    pub fn next_pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
        self.next_pkid
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Vec<SubscribeReturnCode> {
        let pkid = self.next_pkid();
        let filters = filters
            .iter()
            .map(|(filter, qos)| SubscribeFilter { filter: ByteString::from(*filter), qos: *qos })
            .collect();
        self.send(Subscribe { pkid, filters }).await;
        match self.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.pkid, pkid, "SUBACK packet id [MQTT-3.8.4-2]");
                suback.return_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Unsubscribes and waits for the UNSUBACK.
    pub async fn unsubscribe(&mut self, filters: &[&str]) {
        let pkid = self.next_pkid();
        let filters = filters.iter().map(|f| ByteString::from(*f)).collect();
        self.send(Unsubscribe { pkid, filters }).await;
        match self.recv().await {
            Packet::UnsubAck(unsuback) => assert_eq!(unsuback.pkid, pkid, "UNSUBACK packet id [MQTT-3.10.4-4]"),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let pkid = if qos == QoS::AtMostOnce { 0 } else { self.next_pkid() };
        self.send(publish_packet(topic, payload, qos, retain, pkid)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => assert_eq!(self.recv_ack().await, Packet::PubAck(PubAck { pkid })),
            QoS::ExactlyOnce => {
                assert_eq!(self.recv_ack().await, Packet::PubRec(PubRec { pkid }));
                self.send(PubRel { pkid }).await;
                assert_eq!(self.recv_ack().await, Packet::PubComp(PubComp { pkid }));
            }
        }
    }

    /// The next packet that is not a PUBLISH delivered to this client (those are kept for
    /// `recv`).
    async fn recv_ack(&mut self) -> Packet {
        loop {
            match self.recv_from_socket().await {
                Packet::Publish(publish) => self.early.push_back(Packet::Publish(publish)),
                other => return other,
            }
        }
    }

    /// Acknowledges a received QoS 1 or 2 PUBLISH as a client would.
    pub async fn ack(&mut self, publish: &Publish) {
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(PubAck { pkid: publish.pkid }).await,
            QoS::ExactlyOnce => {
                self.send(PubRec { pkid: publish.pkid }).await;
                assert_eq!(self.recv().await, Packet::PubRel(PubRel { pkid: publish.pkid }));
                self.send(PubComp { pkid: publish.pkid }).await;
            }
        }
    }

    /// Sends DISCONNECT and waits for the broker to close the connection.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect).await;
        self.expect_closed().await;
    }

    /// A PINGREQ round trip: everything the broker wrote to this client before answering has
    /// been received once this returns.
    pub async fn ping(&mut self) {
        self.send(Packet::PingReq).await;
        assert_eq!(self.recv().await, Packet::PingResp);
    }

    /// A round trip through the router (the UNSUBACK of a filter never subscribed comes from
    /// it): once this returns, everything the router was sent before, like the PUBLISH of a flow
    /// this or another client has completed, has been applied, so `broker.stats()` is up to date.
    pub async fn router_sync(&mut self) {
        self.unsubscribe(&["sync/never/subscribed"]).await;
    }

    /// Receives `n` PUBLISH packets and acknowledges them as a pipelining client would: PUBACK
    /// for QoS 1, PUBREC for QoS 2 and PUBCOMP for every PUBREL, whatever order the broker
    /// interleaves them in (it may send further messages before a PUBREL). Returns the messages
    /// once `n` arrived and every QoS 2 flow is complete; fails on a packet id reused while in
    /// flight or on a message beyond the `n`th.
    pub async fn collect(&mut self, n: usize) -> Vec<Publish> {
        let mut got = Vec::with_capacity(n);
        let mut awaiting_pubrel: HashSet<u16> = HashSet::new();
        while got.len() < n || !awaiting_pubrel.is_empty() {
            match self.recv().await {
                Packet::Publish(publish) => {
                    match publish.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => self.send(PubAck { pkid: publish.pkid }).await,
                        QoS::ExactlyOnce => {
                            assert!(
                                awaiting_pubrel.insert(publish.pkid),
                                "packet id {} reused while in flight",
                                publish.pkid
                            );
                            self.send(PubRec { pkid: publish.pkid }).await;
                        }
                    }
                    got.push(publish);
                }
                Packet::PubRel(PubRel { pkid }) => {
                    assert!(awaiting_pubrel.remove(&pkid), "PUBREL for packet id {pkid} that is not awaiting one");
                    self.send(PubComp { pkid }).await;
                }
                other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
            }
        }
        assert_eq!(got.len(), n, "more messages than expected: {got:?}");
        got
    }
}

/// A bare connection for races and limits, where the broker closing the connection at any point
/// is an answer, not a failure (unlike [`TestClient`], which fails the test on a close).
pub struct LenientClient(Framed<TcpStream, MqttCodec>);

impl LenientClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr) -> LenientClient {
        let stream = TcpStream::connect(addr).await.expect("cannot connect to the broker");
        stream.set_nodelay(true).unwrap();
        LenientClient(Framed::new(stream, MqttCodec::new(DEFAULT_MAX_PACKET_SIZE)))
    }

    /// Connects and sends `connect`: the CONNACK, or None when the broker closes the
    /// connection instead (e.g. a full listener).
    pub async fn try_connect(addr: SocketAddr, connect: Connect) -> Option<(LenientClient, ConnAck)> {
        let mut client = LenientClient::open(addr).await;
        client.send(connect).await;
        match client.recv_or_closed().await? {
            Packet::ConnAck(connack) => Some((client, connack)),
            other => panic!("expected CONNACK or close, got {other:?}"),
        }
    }

    /// Sends `packet`, ignoring a refused write: a connection the broker already closed shows
    /// up as None in [`LenientClient::recv_or_closed`].
    pub async fn send(&mut self, packet: impl Into<Packet>) {
        let _ = self.0.send(packet.into()).await;
    }

    /// The next packet, or None once the broker has closed the connection; fails the test if
    /// neither happens within [`WAIT`].
    pub async fn recv_or_closed(&mut self) -> Option<Packet> {
        match tokio::time::timeout(WAIT, self.0.next()).await {
            Ok(Some(Ok(packet))) => Some(packet),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("neither a packet nor a close within {WAIT:?}"),
        }
    }
}

/// A clean-session client `client_id` subscribed to `filters`, each granted at the requested
/// QoS: the receiving end of most routing tests.
pub async fn subscriber(addr: SocketAddr, client_id: &str, filters: &[(&str, QoS)]) -> TestClient {
    let (mut client, _) = TestClient::connect(addr, client_id, true).await;
    let granted: Vec<SubscribeReturnCode> = filters.iter().map(|&(_, qos)| SubscribeReturnCode::Success(qos)).collect();
    assert_eq!(client.subscribe(filters).await, granted, "SUBACK for {client_id}");
    client
}

/// The usual pair of a routing test: a [`subscriber`] "sub" to `filters`, and a publisher
/// "pub" connected once the subscription is in place, so everything it publishes is routed to
/// the subscription.
pub async fn subscriber_and_publisher(addr: SocketAddr, filters: &[(&str, QoS)]) -> (TestClient, TestClient) {
    let sub = subscriber(addr, "sub", filters).await;
    let (publisher, _) = TestClient::connect(addr, "pub", true).await;
    (sub, publisher)
}

/// A QoS 1 message from `publisher` reaches `subscriber` (which must be subscribed to `topic`)
/// as the next packet, and is acknowledged: both clients, and the broker between them, still
/// work.
pub async fn round_trip(publisher: &mut TestClient, subscriber: &mut TestClient, topic: &str, payload: &[u8]) {
    publisher.publish(topic, payload, QoS::AtLeastOnce, false).await;
    let next = subscriber.recv_publish().await;
    assert_eq!(
        (next.topic.as_ref() as &str, next.payload.as_ref()),
        (topic, payload),
        "a message arrived that should not have: {next:?}"
    );
    subscriber.ack(&next).await;
}

/// Proves that nothing else is on its way to `subscriber`: publishes a marker on `topic` (which
/// `subscriber` must be subscribed to) from `publisher` and asserts the marker is the next
/// message. Messages from one publisher reach a subscriber in order, so anything the broker
/// would have delivered before the marker would show up first. Replaces sleep-based "nothing
/// arrives" checks.
pub async fn assert_nothing_before_marker(publisher: &mut TestClient, subscriber: &mut TestClient, topic: &str) {
    round_trip(publisher, subscriber, topic, b"marker").await;
}
