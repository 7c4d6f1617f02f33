//! MQTT over WebSocket (`type: ws` listeners, and wss with `ssl: on`), MQTT 3.1.1 section 6,
//! end to end over real sockets: a minimal WebSocket client here (tokio-tungstenite) carries the
//! harness' raw MQTT client, raw frames test the framing rules, and Python Paho
//! (`transport="websockets"`) is the interop peer over ws and wss.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use amqtt_tests::process::{peer_available, probe, ChildLines};
use amqtt_tests::*;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{client_async, WebSocketStream};
use tokio_util::codec::Decoder;

const PAHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/paho_client.py");

/// A broker with a tcp listener `default` and a ws listener `ws` (with `ws_settings`, indented
/// four spaces) side by side, and `rest` at the top level.
fn ws_broker(ws_settings: &str, rest: &str) -> (RunningBroker, SocketAddr, SocketAddr) {
    let broker = start_broker_with(&format!(
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n  \
         ws:\n    type: ws\n    bind: 127.0.0.1:0\n{ws_settings}{rest}"
    ));
    let tcp = broker.local_addr("default").unwrap();
    let ws = broker.local_addr("ws").unwrap();
    (broker, tcp, ws)
}

/// The WebSocket handshake over `stream` for `url`, offering `protocols` (None: no
/// `Sec-WebSocket-Protocol` at all).
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    protocols: Option<&str>,
) -> Result<(WebSocketStream<S>, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    tokio::time::timeout(WAIT, client_async(request, stream)).await.expect("no WebSocket handshake answer in time")
}

/// A WebSocket connection to `addr` at `path`, offering `mqtt`; asserts the broker answered
/// with `mqtt` [MQTT-6.0.0-4].
async fn ws_open(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (ws, response) = handshake(tcp, &format!("ws://{addr}{path}"), Some("mqtt")).await.expect("ws handshake");
    assert_eq!(response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap()), Some("mqtt"));
    ws
}

/// A connected MQTT client over WebSocket, `client_id` accepted with a clean session.
async fn ws_client(addr: SocketAddr, client_id: &str) -> TestClient {
    mqtt_over(WsBytes::new(ws_open(addr, "/mqtt").await), client_id).await
}

/// CONNECT over an established stream; asserts the CONNACK accepts.
async fn mqtt_over(stream: impl TestStream + 'static, client_id: &str) -> TestClient {
    let mut client = TestClient::over(stream);
    client.send(connect_packet(client_id, true)).await;
    match client.recv().await {
        Packet::ConnAck(ConnAck { code: ConnectReturnCode::Accepted, .. }) => client,
        other => panic!("expected an accepting CONNACK for {client_id}, got {other:?}"),
    }
}

/// A WebSocket connection as a byte stream, as the harness' client wants it: each write is one
/// binary frame, and reads return the payloads of the binary frames received.
struct WsBytes<S> {
    ws: WebSocketStream<S>,
    frame: Bytes,
}

impl<S> WsBytes<S> {
    fn new(ws: WebSocketStream<S>) -> Self {
        WsBytes { ws, frame: Bytes::new() }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.frame.is_empty() {
                let n = this.frame.len().min(buf.remaining());
                buf.put_slice(&this.frame[..n]);
                this.frame.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(bytes))) => this.frame = bytes,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(text))) => panic!("the broker sent a text frame: {text}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        this.ws.start_send_unpin(Message::binary(Bytes::copy_from_slice(data))).map_err(io::Error::other)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_close(cx).map_err(io::Error::other)
    }
}

/// A WebSocket connection driven frame by frame, for the framing rules.
struct RawWs {
    ws: WebSocketStream<TcpStream>,
    received: BytesMut,
    codec: MqttCodec,
}

impl RawWs {
    async fn open(addr: SocketAddr) -> RawWs {
        RawWs { ws: ws_open(addr, "/").await, received: BytesMut::new(), codec: MqttCodec::new(1 << 20) }
    }

    async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("ws send");
    }

    /// Sends `bytes` as binary frames cut at `cuts` (offsets into `bytes`).
    async fn send_cut(&mut self, bytes: &[u8], cuts: &[usize]) {
        let mut start = 0;
        for &end in cuts.iter().chain([bytes.len()].iter()) {
            self.ws.feed(Message::binary(Bytes::copy_from_slice(&bytes[start..end]))).await.unwrap();
            start = end;
        }
        self.ws.flush().await.unwrap();
    }

    /// The next MQTT packet, reassembled from however many frames it came in.
    async fn recv_packet(&mut self) -> Packet {
        loop {
            if let Some(packet) = self.codec.decode(&mut self.received).expect("valid MQTT from the broker") {
                return packet;
            }
            match self.next_message().await {
                Message::Binary(bytes) => self.received.extend_from_slice(&bytes),
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// The next frame that is not a ping or pong; fails if none comes within WAIT.
    async fn next_message(&mut self) -> Message {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(Some(Ok(message))) => return message,
                Ok(other) => panic!("the WebSocket connection ended: {other:?}"),
                Err(_) => panic!("no frame from the broker within {WAIT:?}"),
            }
        }
    }
}

fn encode(packets: &[Packet]) -> BytesMut {
    let mut bytes = BytesMut::new();
    for packet in packets {
        packet.write(&mut bytes).unwrap();
    }
    bytes
}

/// [MQTT-6.0.0-2] [MQTT-6.0.0-4] A ws publisher reaches a ws subscriber at QoS 0, 1 and 2: every
/// flow, its acknowledgements included, crosses the WebSocket both ways.
#[tokio::test]
async fn ws_round_trip_at_each_qos() {
    let (broker, _, ws) = ws_broker("", "");
    let mut sub = ws_client(ws, "ws-sub").await;
    assert_eq!(
        sub.subscribe(&[("ws/#", QoS::ExactlyOnce)]).await,
        vec![SubscribeReturnCode::Success(QoS::ExactlyOnce)]
    );
    let mut publisher = ws_client(ws, "ws-pub").await;
    for qos in QOS_ALL {
        let name = format!("ws/qos{}", qos as u8);
        publisher.publish(&name, b"over websocket", qos, false).await;
        let got = sub.collect(1).await;
        assert_eq!(
            (topic(&got[0]), got[0].payload.as_ref(), got[0].qos),
            (name.as_str(), b"over websocket".as_ref(), qos)
        );
    }
    publisher.disconnect().await;
    sub.disconnect().await;
    assert_eq!(broker.stats().connections_refused, 0);
    broker.stop();
}

/// Any request path is served, and a client of MQTT 3.1 offering only `mqttv3.1` gets it back;
/// a client offering both gets `mqtt`.
#[tokio::test]
async fn any_path_and_the_old_subprotocol() {
    let (broker, _, ws) = ws_broker("", "");
    for (path, offered, answered) in
        [("/", "mqtt", "mqtt"), ("/some/where?x=1", "mqttv3.1", "mqttv3.1"), ("/mqtt", "mqttv3.1, mqtt", "mqtt")]
    {
        let tcp = TcpStream::connect(ws).await.unwrap();
        let (ws_stream, response) =
            handshake(tcp, &format!("ws://{ws}{path}"), Some(offered)).await.expect("ws handshake");
        assert_eq!(response.headers().get("Sec-WebSocket-Protocol").unwrap(), answered, "offered {offered}");
        let client = mqtt_over(WsBytes::new(ws_stream), "paths").await;
        client.disconnect().await;
    }
    broker.stop();
}

/// [MQTT-6.0.0-3] A client that does not offer the subprotocol `mqtt` is refused with HTTP 400,
/// and so is a plain HTTP request; the listener goes on serving.
#[tokio::test]
async fn missing_subprotocol_is_refused() {
    let (broker, _, ws) = ws_broker("", "");
    for offered in [None, Some("chat"), Some("MQTT")] {
        let tcp = TcpStream::connect(ws).await.unwrap();
        match handshake(tcp, &format!("ws://{ws}/mqtt"), offered).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400, "offered {offered:?}"),
            Ok(_) => panic!("upgraded although the client offered {offered:?}"),
            Err(other) => panic!("expected HTTP 400 for {offered:?}, got {other}"),
        }
    }
    let mut plain = TcpStream::connect(ws).await.unwrap();
    plain.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("plain request answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");

    let client = ws_client(ws, "after-refusals").await;
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-6.0.0-2] One MQTT packet may span several frames, and one frame may hold several
/// packets: the session sees a byte stream.
#[tokio::test]
async fn packets_and_frames_are_independent() {
    let (broker, tcp, ws) = ws_broker("", "");
    let mut raw = RawWs::open(ws).await;
    // CONNECT cut into a 1-byte frame (half the fixed header), a 2-byte frame and the rest.
    raw.send_cut(&encode(&[connect_packet("frames", true).into()]), &[1, 3]).await;
    assert!(matches!(raw.recv_packet().await, Packet::ConnAck(ConnAck { code: ConnectReturnCode::Accepted, .. })));

    // SUBSCRIBE, a PUBLISH to itself and PINGREQ in one frame.
    let subscribe = Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter { filter: ByteString::from("frames/#"), qos: QoS::AtMostOnce }],
    };
    let publish = publish_packet("frames/one", b"in a shared frame", QoS::AtMostOnce, false, 0);
    raw.send(Message::binary(encode(&[subscribe.into(), publish.into(), Packet::PingReq]).freeze())).await;
    let mut got = vec![raw.recv_packet().await, raw.recv_packet().await, raw.recv_packet().await];
    got.sort_by_key(|packet| format!("{packet:?}"));
    assert!(got.contains(&Packet::PingResp), "{got:?}");
    assert!(got.iter().any(|p| matches!(p, Packet::SubAck(SubAck { pkid: 1, .. }))), "{got:?}");

    // A 100 kB PUBLISH from a tcp client reaches the ws client whole; and the other way round
    // in 1000-byte frames.
    let (mut tcp_client, _) = TestClient::connect(tcp, "tcp-peer", true).await;
    tcp_client.subscribe(&[("big/#", QoS::AtMostOnce)]).await;
    let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let big = encode(&[publish_packet("big/ws", &payload, QoS::AtMostOnce, false, 0).into()]);
    let cuts: Vec<usize> = (1000..big.len()).step_by(1000).collect();
    raw.send_cut(&big, &cuts).await;
    let got = tcp_client.recv_publish().await;
    assert_eq!((topic(&got), got.payload.as_ref()), ("big/ws", payload.as_slice()));
    tcp_client.publish("frames/big", &payload, QoS::AtMostOnce, false).await;
    match raw.recv_packet().await {
        Packet::Publish(publish) => assert_eq!(publish.payload.as_ref(), payload.as_slice()),
        other => panic!("expected the big PUBLISH, got {other:?}"),
    }
    broker.stop();
}

/// [MQTT-6.0.0-1] A text frame closes that connection, with a close frame saying why (1003),
/// and its will is published; other clients, over ws or tcp, notice nothing.
#[tokio::test]
async fn text_frame_closes_only_that_connection() {
    let (broker, tcp, ws) = ws_broker("", "");
    let mut watcher = ws_client(ws, "watcher").await;
    watcher.subscribe(&[("text/#", QoS::AtLeastOnce)]).await;
    let (mut tcp_pub, _) = TestClient::connect(tcp, "tcp-pub", true).await;

    let mut offender = RawWs::open(ws).await;
    let connect = Connect {
        will: Some(last_will("text/will", b"gone", QoS::AtLeastOnce, false)),
        ..connect_packet("offender", true)
    };
    offender.send(Message::binary(encode(&[connect.into()]).freeze())).await;
    assert!(matches!(offender.recv_packet().await, Packet::ConnAck(_)));
    offender.send(Message::text("PINGREQ, as text")).await;
    match offender.next_message().await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let will = watcher.recv_publish().await;
    assert_eq!((topic(&will), will.payload.as_ref()), ("text/will", b"gone".as_ref()));
    watcher.ack(&will).await;
    round_trip(&mut tcp_pub, &mut watcher, "text/after", b"still here").await;
    assert_eq!(broker.stats().protocol_errors, 1);
    broker.stop();
}

/// A ping is answered with a pong carrying its payload. A closing client: a WebSocket close frame
/// from the client is answered with one and ends the
/// session like a lost connection (the will is published); a DISCONNECT makes the broker close
/// the WebSocket with a close frame of its own.
#[tokio::test]
async fn close_frames_both_ways() {
    let (broker, _, ws) = ws_broker("", "");
    let mut watcher = ws_client(ws, "watcher").await;
    watcher.subscribe(&[("close/#", QoS::AtMostOnce)]).await;

    let mut closer = RawWs::open(ws).await;
    let connect = Connect {
        will: Some(last_will("close/will", b"closed", QoS::AtMostOnce, false)),
        ..connect_packet("closer", true)
    };
    closer.send(Message::binary(encode(&[connect.into()]).freeze())).await;
    assert!(matches!(closer.recv_packet().await, Packet::ConnAck(_)));
    closer.send(Message::Ping(Bytes::from_static(b"are you there"))).await;
    match tokio::time::timeout(WAIT, closer.ws.next()).await {
        Ok(Some(Ok(Message::Pong(payload)))) => assert_eq!(payload.as_ref(), b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    closer.send(Message::Close(None)).await;
    assert!(matches!(closer.next_message().await, Message::Close(_)), "close frame answered");
    assert_eq!(topic(&watcher.recv_publish().await), "close/will");

    let mut leaver = RawWs::open(ws).await;
    leaver.send(Message::binary(encode(&[connect_packet("leaver", true).into()]).freeze())).await;
    assert!(matches!(leaver.recv_packet().await, Packet::ConnAck(_)));
    leaver.send(Message::binary(encode(&[Packet::Disconnect]).freeze())).await;
    match leaver.next_message().await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame after DISCONNECT, got {other:?}"),
    }
    watcher.ping().await;
    broker.stop();
}

/// ws and tcp listeners side by side: messages cross from one transport to the other both ways.
#[tokio::test]
async fn ws_and_tcp_clients_exchange_messages() {
    let (broker, tcp, ws) = ws_broker("", "");
    let mut ws_sub = ws_client(ws, "ws-sub").await;
    ws_sub.subscribe(&[("mixed/#", QoS::AtLeastOnce)]).await;
    let tcp_sub = subscriber(tcp, "tcp-sub", &[("mixed/#", QoS::AtLeastOnce)]).await;
    let mut tcp_sub = tcp_sub;
    let mut ws_pub = ws_client(ws, "ws-pub").await;
    let (mut tcp_pub, _) = TestClient::connect(tcp, "tcp-pub", true).await;

    ws_pub.publish("mixed/from-ws", b"ws to all", QoS::AtLeastOnce, false).await;
    tcp_pub.publish("mixed/from-tcp", b"tcp to all", QoS::AtLeastOnce, false).await;
    for client in [&mut ws_sub, &mut tcp_sub] {
        let got = client.collect(2).await;
        let mut got: Vec<(String, Vec<u8>)> = got.iter().map(|p| (topic(p).to_string(), p.payload.to_vec())).collect();
        got.sort();
        assert_eq!(
            got,
            vec![("mixed/from-tcp".into(), b"tcp to all".to_vec()), ("mixed/from-ws".into(), b"ws to all".to_vec())]
        );
    }
    broker.stop();
}

/// `max-connections` on a ws listener: the connection beyond it is closed at accept (the
/// WebSocket handshake fails), counted and logged; the open ones keep working; a freed slot is
/// usable again.
#[tokio::test]
async fn max_connections_on_a_ws_listener() {
    let (broker, tcp, ws) = ws_broker("    max-connections: 2\n", "");
    let mut one = ws_client(ws, "one").await;
    let mut two = ws_client(ws, "two").await;
    two.subscribe(&[("max/#", QoS::AtLeastOnce)]).await;
    for attempt in 1..=2u64 {
        let stream = TcpStream::connect(ws).await.unwrap();
        let refused = handshake(stream, &format!("ws://{ws}/mqtt"), Some("mqtt")).await;
        assert!(refused.is_err(), "a third WebSocket was upgraded");
        assert_eq!(broker.stats().connections_refused, attempt);
    }
    // The tcp listener has its own budget.
    let (tcp_client, _) = TestClient::connect(tcp, "tcp", true).await;
    round_trip(&mut one, &mut two, "max/a", b"still working").await;

    one.disconnect().await;
    // The slot is given back once the session has ended, asynchronously: retry, bounded.
    let deadline = Instant::now() + WAIT;
    let ws_stream = loop {
        let stream = TcpStream::connect(ws).await.unwrap();
        if let Ok((ws_stream, _)) = handshake(stream, &format!("ws://{ws}/mqtt"), Some("mqtt")).await {
            break ws_stream;
        }
        assert!(Instant::now() < deadline, "no WebSocket accepted within {WAIT:?} after one of two closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut three = mqtt_over(WsBytes::new(ws_stream), "three").await;
    three.ping().await;
    tcp_client.disconnect().await;
    broker.stop();
}

/// A connection that opens TCP and sends no upgrade request is dropped after `connect-timeout`,
/// and so is one that stops in the middle of its request; the listener serves others meanwhile.
#[tokio::test]
async fn silent_handshake_is_dropped_after_connect_timeout() {
    let (broker, _, ws) = ws_broker("", "connect-timeout: 1\n");
    let started = Instant::now();
    let mut silent = TcpStream::connect(ws).await.unwrap();
    let mut partial = TcpStream::connect(ws).await.unwrap();
    partial.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();

    let client = ws_client(ws, "meanwhile").await;
    for stream in [&mut silent, &mut partial] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "connection still open after {WAIT:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before connect-timeout: {:?}", started.elapsed());
    client.disconnect().await;
    broker.stop();
}

/// A CA and a server certificate for 127.0.0.1 and localhost, written as PEM files.
struct Certificates {
    dir: tempfile::TempDir,
    ca: rustls::pki_types::CertificateDer<'static>,
}

impl Certificates {
    fn new() -> Certificates {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "amqtt-rs websocket test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Certificates { dir, ca: ca.der().clone() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The settings of a wss listener using these files, indented for [`ws_broker`].
    fn listener_settings(&self) -> String {
        format!(
            "    ssl: on\n    certfile: {}\n    keyfile: {}\n",
            self.path("server.pem").display(),
            self.path("server.key").display()
        )
    }

    /// A TLS connection to `addr` that trusts only the test CA.
    async fn connect(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake with the wss listener")
    }
}

/// wss (a ws listener with `ssl: on`): a client over TLS + WebSocket exchanges messages with a
/// tcp client; a client speaking plain ws to it fails, is counted as a TLS handshake failure,
/// and nobody else notices.
#[tokio::test]
async fn wss_round_trip() {
    let certs = Certificates::new();
    let (broker, tcp, wss) = ws_broker(&certs.listener_settings(), "");
    let tls = certs.connect(wss).await;
    let (ws_stream, response) =
        handshake(tls, &format!("wss://localhost:{}/mqtt", wss.port()), Some("mqtt")).await.expect("wss handshake");
    assert_eq!(response.headers().get("Sec-WebSocket-Protocol").unwrap(), "mqtt");
    let mut secure = mqtt_over(WsBytes::new(ws_stream), "secure").await;
    secure.subscribe(&[("wss/#", QoS::ExactlyOnce)]).await;
    let (mut plain_tcp, _) = TestClient::connect(tcp, "tcp", true).await;
    plain_tcp.subscribe(&[("wss/#", QoS::ExactlyOnce)]).await;

    let plaintext = TcpStream::connect(wss).await.unwrap();
    assert!(handshake(plaintext, &format!("ws://{wss}/mqtt"), Some("mqtt")).await.is_err());
    assert_eq!(broker.stats().tls_handshake_failures, 1);

    secure.publish("wss/up", b"from wss", QoS::ExactlyOnce, false).await;
    for client in [&mut plain_tcp, &mut secure] {
        let got = client.collect(1).await;
        assert_eq!((topic(&got[0]), got[0].payload.as_ref()), ("wss/up", b"from wss".as_ref()));
    }
    plain_tcp.publish("wss/down", b"to wss", QoS::AtLeastOnce, false).await;
    let got = secure.collect(1).await;
    assert_eq!((topic(&got[0]), got[0].payload.as_ref()), ("wss/down", b"to wss".as_ref()));
    secure.disconnect().await;
    broker.stop();
}

/// Whether python3 with paho-mqtt 2.x can run (see [`peer_available`]).
fn paho_available() -> bool {
    let import = "import paho.mqtt.client as m; m.CallbackAPIVersion.VERSION2";
    let found = probe("python3", &["-c", import]).is_some_and(|status| status.success());
    peer_available((!found).then(|| "python3 paho-mqtt 2.x not installed (python3 -m pip install paho-mqtt)".into()))
}

/// `paho_client.py roundtrip` over WebSocket against `addr` at `qos`, with `extra` arguments.
async fn paho_ws_round_trip(addr: SocketAddr, qos: &str, extra: &[&str]) {
    let mut command = Command::new("python3");
    command
        .arg(PAHO)
        .arg("roundtrip")
        .args(["--host", &addr.ip().to_string(), "--port", &addr.port().to_string(), "--qos", qos])
        .args(["--transport", "websockets", "--ws-path", "/mqtt"])
        .args(extra);
    let out = ChildLines::spawn(&mut command, format!("paho_client.py roundtrip websockets {}", extra.join(" ")))
        .output_until_exit()
        .await;
    let expected = format!("message topic=paho/qos{qos} qos={qos} retain=0 payload=paho round trip at qos {qos}");
    assert_eq!(out, vec![expected, "ok".to_string()]);
}

/// Paho (`transport="websockets"`) to Paho through a ws listener at QoS 0, 1 and 2.
#[tokio::test]
async fn paho_over_ws() {
    if !paho_available() {
        return;
    }
    let (broker, _, ws) = ws_broker("", "");
    for qos in ["0", "1", "2"] {
        paho_ws_round_trip(ws, qos, &[]).await;
    }
    broker.stop();
}

/// Paho over wss, trusting the test CA.
#[tokio::test]
async fn paho_over_wss() {
    if !paho_available() {
        return;
    }
    let certs = Certificates::new();
    let (broker, _, wss) = ws_broker(&certs.listener_settings(), "");
    let ca = certs.path("ca.pem");
    paho_ws_round_trip(wss, "1", &["--cafile", ca.to_str().unwrap()]).await;
    broker.stop();
}

/// Waits (bounded) until `broker` counts `n` connected clients: the end of a session that has no
/// other visible sign.
async fn until_connected_clients(broker: &RunningBroker, n: usize) {
    let deadline = Instant::now() + WAIT;
    while broker.stats().clients_connected != n {
        assert!(Instant::now() < deadline, "not {n} connected clients within {WAIT:?}: {:?}", broker.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [MQTT-3.14.4-3] A DISCONNECT sent right before the client closes its socket (no close frame,
/// as Paho does) still reaches the session: the will is discarded. Repeated, since the frame
/// and the end of the stream often arrive in one read.
#[tokio::test]
async fn disconnect_right_before_the_socket_closes_is_not_lost() {
    let (broker, tcp, ws) = ws_broker("", "");
    let mut watcher = ws_client(ws, "watcher").await;
    watcher.subscribe(&[("leave/#", QoS::AtMostOnce)]).await;
    let (mut marker, _) = TestClient::connect(tcp, "marker", true).await;
    for i in 0..10 {
        let mut leaver = RawWs::open(ws).await;
        let will = last_will("leave/will", format!("will {i}").as_bytes(), QoS::AtMostOnce, false);
        let connect = Connect { will: Some(will), ..connect_packet("leaver", true) };
        leaver.send(Message::binary(encode(&[connect.into()]).freeze())).await;
        assert!(matches!(leaver.recv_packet().await, Packet::ConnAck(_)));
        leaver.send(Message::binary(encode(&[Packet::Disconnect]).freeze())).await;
        drop(leaver);
        until_connected_clients(&broker, 2).await;
        assert_nothing_before_marker(&mut marker, &mut watcher, "leave/marker").await;
    }
    broker.stop();
}
