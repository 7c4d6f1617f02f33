//! MQTT over TLS (`mqtts://`), WebSocket (`ws://`) and WebSocket over TLS (`wss://`), end to
//! end: this client and `amqtt_pub` / `amqtt_sub` against Mosquitto's TLS and WebSocket
//! listeners, and against a scripted WebSocket server for what Mosquitto cannot show (the
//! request it received, MQTT packets split across frames, a text frame).
//!
//! Certificates are made at test time ([`Pki`]): a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate, and the bad ones (unknown CA, wrong name, self-signed,
//! expired). Every wait ends on the awaited event, bounded by [`WAIT`].

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use amqtt_client::{ClientConfig, ClientError, ConnectionConfig, MqttClient, QoS};
use amqtt_protocol::{ConnAck, ConnectReturnCode, MqttCodec, Packet, Publish};
use bytes::{Bytes, BytesMut};
use common::*;
use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::codec::Decoder;

const PUB: &str = env!("CARGO_BIN_EXE_amqtt_pub");
const SUB: &str = env!("CARGO_BIN_EXE_amqtt_sub");

/// PEM files made for one test, in a directory removed on drop.
struct Pki {
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// A CA with a server certificate (127.0.0.1, localhost) and a client certificate, and the
    /// bad ones: a server certificate of another CA, one for another name, a self-signed one and
    /// an expired one.
    fn new() -> Pki {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "amqtt-client-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Pki { dir };
        let ca = certificate_authority("amqtt-rs test CA");
        std::fs::write(pki.path("ca.pem"), ca.pem()).expect("write");
        let other_ca = certificate_authority("some other CA");
        std::fs::write(pki.path("other-ca.pem"), other_ca.pem()).expect("write");

        pki.leaf("server", &["127.0.0.1", "localhost"], false, Some(&ca), None);
        pki.leaf("client", &[], true, Some(&ca), None);
        pki.leaf("other-ca-server", &["127.0.0.1", "localhost"], false, Some(&other_ca), None);
        pki.leaf("wrong-name-server", &["broker.example"], false, Some(&ca), None);
        pki.leaf("self-signed-server", &["127.0.0.1"], false, None, None);
        pki.leaf("expired-server", &["127.0.0.1"], false, Some(&ca), Some((2000, 2001)));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn pair(&self, name: &str) -> Pair {
        Pair { cert: self.path(&format!("{name}.pem")), key: self.path(&format!("{name}.key")) }
    }

    /// Mosquitto listener lines serving TLS with the certificate pair `name`.
    fn listener(&self, name: &str) -> String {
        let pair = self.pair(name);
        format!("certfile {}\nkeyfile {}", pair.cert.display(), pair.key.display())
    }

    fn leaf(
        &self,
        name: &str,
        names: &[&str],
        client: bool,
        issuer: Option<&CertifiedIssuer<'static, KeyPair>>,
        years: Option<(i32, i32)>,
    ) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("amqtt-rs test {name}"));
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).expect("sign"),
            None => params.self_signed(&key).expect("self-sign"),
        };
        let pair = self.pair(name);
        std::fs::write(pair.cert, cert.pem()).expect("write");
        std::fs::write(pair.key, key.serialize_pem()).expect("write");
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("self-sign")
}

/// [`test_config`] trusting `cafile` only.
fn trusting(cafile: &Path) -> ClientConfig {
    ClientConfig {
        connection: ConnectionConfig { cafile: Some(cafile.into()), ..ConnectionConfig::default() },
        ..test_config()
    }
}

/// Subscribes `subscriber` and proves messages flow both ways between it and `publisher` at
/// QoS 1 and 2 (publisher first subscribed on its own connection type, then the other way).
async fn round_trip(subscriber: &MqttClient, publisher: &MqttClient, topic: &str) {
    subscriber.subscribe(&[(topic, QoS::ExactlyOnce)]).await.expect("subscribe");
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("{topic} at {qos:?}");
        publisher.publish(topic, payload.clone(), Some(qos), Some(false)).await.expect("publish");
        let message = next_message(subscriber).await;
        assert_eq!((message.topic.as_str(), &message.payload[..], message.qos), (topic, payload.as_bytes(), qos));
    }
}

/// The error of a connection that must fail, within [`WAIT`].
async fn connect_error(url: &str, config: ClientConfig) -> ClientError {
    let client = MqttClient::new(Some("must-fail"), config);
    match tokio::time::timeout(WAIT, client.connect(url)).await.expect("connect must end") {
        Ok(_) => panic!("{url}: connected, but must fail"),
        Err(error) => error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_round_trip_with_cafile_capath_and_cadata() {
    let pki = Pki::new();
    let Some(mosquitto) = Mosquitto::start_with(&[&pki.listener("server")]).await else { return };
    let by_ip = mosquitto.extra_url(0, "mqtts", "127.0.0.1", "");
    let by_name = mosquitto.extra_url(0, "mqtts", "localhost", "");

    let subscriber = connected(&by_ip, "tls-sub", trusting(&pki.ca())).await;
    let publisher = connected(&mosquitto.url(), "tcp-pub", test_config()).await;
    round_trip(&subscriber, &publisher, "tls/in").await;

    // The certificate's DNS name, and the CA given as a directory and as PEM text.
    let capath = pki.path("capath");
    std::fs::create_dir_all(&capath).expect("dir");
    std::fs::copy(pki.ca(), capath.join("ca.pem")).expect("copy");
    std::fs::write(capath.join("README"), "not a certificate").expect("write");
    let by_dir = ClientConfig {
        connection: ConnectionConfig { capath: Some(capath), ..ConnectionConfig::default() },
        ..test_config()
    };
    let tls_publisher = connected(&by_name, "tls-pub-capath", by_dir).await;
    round_trip(&publisher, &tls_publisher, "tls/out").await;
    let pem = std::fs::read_to_string(pki.ca()).expect("read");
    let by_text = ClientConfig {
        connection: ConnectionConfig { cadata: Some(pem), ..ConnectionConfig::default() },
        ..test_config()
    };
    let tls_publisher = connected(&by_name, "tls-pub-cadata", by_text).await;
    tls_publisher.publish("tls/in", "cadata", Some(QoS::AtLeastOnce), None).await.expect("publish");
    assert_eq!(&next_message(&subscriber).await.payload[..], b"cadata");
    subscriber.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_wss_round_trips() {
    let pki = Pki::new();
    let wss = format!("protocol websockets\n{}", pki.listener("server"));
    let Some(mosquitto) = Mosquitto::start_with(&["protocol websockets", &wss]).await else { return };
    let ws_url = mosquitto.extra_url(0, "ws", "127.0.0.1", "/mqtt");
    let wss_url = mosquitto.extra_url(1, "wss", "localhost", "/mqtt");

    let ws = connected(&ws_url, "ws-client", test_config()).await;
    let wss = connected(&wss_url, "wss-client", trusting(&pki.ca())).await;
    round_trip(&ws, &wss, "ws/in").await;
    round_trip(&wss, &ws, "wss/in").await;

    // A large message spans TLS records and TCP segments. Received over plain TCP: Mosquitto
    // 2.0's WebSocket listener holds back large outgoing messages (seconds for 70 kB, paho
    // included); reassembly on our side is covered by `websocket_request_headers_and_frames`.
    let tcp = connected(&mosquitto.url(), "big-sub", test_config()).await;
    tcp.subscribe(&[("big", QoS::AtLeastOnce)]).await.expect("subscribe");
    let big = Bytes::from((0..1_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    for sender in [&ws, &wss] {
        sender.publish("big", big.clone(), Some(QoS::AtLeastOnce), None).await.expect("publish");
        assert_eq!(next_message(&tcp).await.payload, big);
    }
    ws.disconnect().await.expect("disconnect");
    wss.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_client_certificate_accepted_and_required() {
    let pki = Pki::new();
    let listener = format!("{}\ncafile {}\nrequire_certificate true", pki.listener("server"), pki.ca().display());
    let Some(mosquitto) = Mosquitto::start_with(&[&listener]).await else { return };
    let url = mosquitto.extra_url(0, "mqtts", "127.0.0.1", "");

    let client = pki.pair("client");
    let mut with_certificate = trusting(&pki.ca());
    with_certificate.connection.certfile = Some(client.cert);
    with_certificate.connection.keyfile = Some(client.key);
    let tls = connected(&url, "mtls-client", with_certificate).await;
    let tcp = connected(&mosquitto.url(), "mtls-peer", test_config()).await;
    round_trip(&tls, &tcp, "mtls/t").await;

    // Without a certificate the broker refuses the handshake: not retried, and said plainly.
    match connect_error(&url, trusting(&pki.ca())).await {
        ClientError::Tls { reason, .. } => assert!(reason.contains("--cert-file"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_or_expired_certificates_fail_with_what_to_do() {
    let pki = Pki::new();
    let Some(mosquitto) =
        Mosquitto::start_with(&[&pki.listener("other-ca-server"), &pki.listener("expired-server")]).await
    else {
        return;
    };
    let unknown_ca = mosquitto.extra_url(0, "mqtts", "127.0.0.1", "");
    // Trusting our CA, or (no cafile) the system's CAs: neither signed it.
    for config in [trusting(&pki.ca()), test_config()] {
        match connect_error(&unknown_ca, config).await {
            error @ ClientError::Tls { .. } => {
                let message = error.to_string();
                assert!(message.contains("not signed by a trusted CA") && message.contains("--ca-file"), "{message}");
                assert!(message.starts_with(&format!("TLS connection to {unknown_ca} failed")), "{message}");
            }
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }
    match connect_error(&mosquitto.extra_url(1, "mqtts", "127.0.0.1", ""), trusting(&pki.ca())).await {
        ClientError::Tls { reason, .. } => assert!(reason.contains("has expired"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // A CA file that is not there is named.
    match connect_error(&unknown_ca, trusting(&pki.path("missing.pem"))).await {
        error @ ClientError::TlsSetup { .. } => {
            assert!(error.to_string().contains(&pki.path("missing.pem").display().to_string()), "{error}")
        }
        other => panic!("expected a TLS setup error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_hostname_false_accepts_a_certificate_for_another_name() {
    let pki = Pki::new();
    let Some(mosquitto) = Mosquitto::start_with(&[&pki.listener("wrong-name-server")]).await else { return };
    let url = mosquitto.extra_url(0, "mqtts", "127.0.0.1", "");
    match connect_error(&url, trusting(&pki.ca())).await {
        ClientError::Tls { reason, .. } => {
            assert!(reason.contains("not valid for \"127.0.0.1\"") && reason.contains("check_hostname"), "{reason}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let client = connected(&url, "any-name", ClientConfig { check_hostname: false, ..trusting(&pki.ca()) }).await;
    let peer = connected(&mosquitto.url(), "any-name-peer", test_config()).await;
    round_trip(&client, &peer, "names/t").await;
    // The chain is still checked: another CA's certificate is refused.
    let other = ClientConfig { check_hostname: false, ..trusting(&pki.path("other-ca.pem")) };
    assert!(matches!(connect_error(&url, other).await, ClientError::Tls { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_cert_false_accepts_a_self_signed_certificate() {
    let pki = Pki::new();
    let Some(mosquitto) = Mosquitto::start_with(&[&pki.listener("self-signed-server")]).await else { return };
    let url = mosquitto.extra_url(0, "mqtts", "127.0.0.1", "");
    assert!(matches!(connect_error(&url, trusting(&pki.ca())).await, ClientError::Tls { .. }));
    let client = connected(&url, "unverified", ClientConfig { verify_cert: false, ..test_config() }).await;
    let peer = connected(&mosquitto.url(), "unverified-peer", test_config()).await;
    round_trip(&client, &peer, "unverified/t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_survives_a_websocket_broker_restart() {
    let Some(mut mosquitto) = Mosquitto::start_with(&["protocol websockets"]).await else { return };
    let url = mosquitto.extra_url(0, "ws", "127.0.0.1", "/mqtt");
    let config = ClientConfig { reconnect_retries: -1, reconnect_max_interval: 1, ..ClientConfig::default() };
    let subscriber = connected(&url, "ws-restart-sub", config).await;
    subscriber.subscribe(&[("restart/#", QoS::AtLeastOnce)]).await.expect("subscribe");

    mosquitto.restart().await;
    // Mosquitto keeps no session across the restart: receiving a retained message published
    // after it proves the client reconnected over WebSocket and subscribed again.
    let publisher = connected(&mosquitto.url(), "ws-restart-pub", test_config()).await;
    publisher.publish("restart/retained", "after", Some(QoS::AtLeastOnce), Some(true)).await.expect("publish");
    let message = next_message(&subscriber).await;
    assert_eq!((message.topic.as_str(), &message.payload[..]), ("restart/retained", &b"after"[..]));
    assert!(subscriber.is_connected());
    subscriber.disconnect().await.expect("disconnect");
}

/// What the scripted WebSocket server saw of the upgrade request.
#[derive(Debug, Default, Clone)]
struct Upgrade {
    uri: String,
    headers: Vec<(String, String)>,
}

/// A WebSocket server on a free port that accepts one connection, records its upgrade request
/// and answers with subprotocol `mqtt`.
async fn accept_websocket(
    listener: &TcpListener,
) -> (tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, Upgrade) {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.expect("no connection").expect("accept");
    let seen = Arc::new(Mutex::new(Upgrade::default()));
    let record = seen.clone();
    // The signature tungstenite's callback must have; its error type is large.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request, mut response: Response| {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_string()))
            .collect();
        *record.lock().unwrap() = Upgrade { uri: request.uri().to_string(), headers };
        response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    let ws = tokio::time::timeout(WAIT, tokio_tungstenite::accept_hdr_async(tcp, callback))
        .await
        .expect("handshake timed out")
        .expect("handshake");
    let upgrade = seen.lock().unwrap().clone();
    (ws, upgrade)
}

fn encode(packet: impl Into<Packet>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.into().write(&mut buf).expect("encodes");
    buf.to_vec()
}

fn header<'a>(upgrade: &'a Upgrade, name: &str) -> Option<&'a str> {
    upgrade.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The request carries the URL's path, subprotocol `mqtt` and the extra headers; MQTT bytes go
/// in binary frames whatever their split (a packet across frames, several in one); a text frame
/// ends the connection [MQTT-6.0.0-1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_request_headers_and_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/mqtt/sub?token=abc", listener.local_addr().expect("addr"));
    let config = ClientConfig {
        extra_headers: vec![("Authorization".into(), "Bearer s3cret".into()), ("X-Device".into(), "42".into())],
        auto_reconnect: false,
        ..ClientConfig::default()
    };
    let client = MqttClient::new(Some("ws-scripted"), config);
    let connecting = {
        let client = client.clone();
        tokio::spawn(async move { client.connect(&url).await })
    };
    let (mut ws, upgrade) = accept_websocket(&listener).await;
    assert_eq!(upgrade.uri, "/mqtt/sub?token=abc");
    assert_eq!(header(&upgrade, "sec-websocket-protocol"), Some("mqtt"));
    assert_eq!(header(&upgrade, "authorization"), Some("Bearer s3cret"));
    assert_eq!(header(&upgrade, "x-device"), Some("42"));

    let connect = match tokio::time::timeout(WAIT, ws.next()).await.expect("CONNECT").expect("open").expect("frame") {
        WsMessage::Binary(data) => MqttCodec::default().decode(&mut BytesMut::from(&data[..])).expect("valid"),
        other => panic!("expected a binary frame, got {other:?}"),
    };
    assert!(matches!(connect, Some(Packet::Connect(ref c)) if c.client_id == "ws-scripted"), "{connect:?}");

    // CONNACK split in two frames, the second also carrying a PUBLISH and half of another.
    let connack = encode(ConnAck { session_present: false, code: ConnectReturnCode::Accepted });
    let publish = |topic: &'static str| {
        encode(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            payload: Bytes::from_static(b"payload"),
        })
    };
    let (first, second) = (publish("a/1"), publish("a/2"));
    let mut middle = connack[2..].to_vec();
    middle.extend_from_slice(&first);
    middle.extend_from_slice(&second[..3]);
    for frame in [connack[..2].to_vec(), middle, second[3..].to_vec()] {
        ws.send(WsMessage::Binary(frame.into())).await.expect("send");
    }
    tokio::time::timeout(WAIT, connecting).await.expect("connect ends").expect("task").expect("connected");
    assert_eq!(next_message(&client).await.topic, "a/1");
    assert_eq!(next_message(&client).await.topic, "a/2");

    ws.send(WsMessage::Text("not MQTT".into())).await.expect("send");
    match client.deliver_message(Some(WAIT)).await {
        Err(ClientError::Disconnected) => {}
        other => panic!("a text frame must end the connection, got {other:?}"),
    }
}

/// An HTTP error instead of the upgrade is reported with what to check, and not retried (a
/// retried attempt would end as `Unreachable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_refused_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/wrong", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut request = vec![0; 4096];
        let _ = tcp.read(&mut request).await;
        let _ = tcp.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
    });
    match connect_error(&url, test_config()).await {
        error @ ClientError::WebSocket { .. } => {
            let message = error.to_string();
            assert!(message.contains("HTTP 404") && message.contains("path"), "{message}");
        }
        other => panic!("expected a WebSocket error, got {other:?}"),
    }
    server.await.expect("server");
}

fn command(program: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_remove("RUST_LOG").stdin(Stdio::null()).kill_on_drop(true);
    command
}

async fn run(program: &str, args: &[&str]) -> Output {
    let child = command(program, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not end within {WAIT:?}"))
        .expect("wait")
}

fn describe(output: &Output) -> String {
    format!(
        "{}; stdout {:?}; stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `amqtt_pub` over mqtts with `--ca-file` and over ws, `amqtt_sub` over ws and over mqtts
/// with `--ca-file`: retained messages cross the two transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pub_sub_over_mqtts_and_ws() {
    let pki = Pki::new();
    let Some(mosquitto) = Mosquitto::start_with(&[&pki.listener("server"), "protocol websockets"]).await else {
        return;
    };
    let mqtts = mosquitto.extra_url(0, "mqtts", "localhost", "");
    let ws = mosquitto.extra_url(1, "ws", "127.0.0.1", "/mqtt");
    let ca = pki.ca().display().to_string();

    let published =
        run(PUB, &["--url", &mqtts, "--ca-file", &ca, "-t", "cli/tls", "-m", "over tls", "-r", "-q", "1"]).await;
    assert!(published.status.success(), "amqtt_pub over mqtts: {}", describe(&published));
    let headers = r#"{"X-Test": "yes", "X-Number": 7}"#;
    let received = run(SUB, &["--url", &ws, "--extra-headers", headers, "-t", "cli/tls", "-n", "1"]).await;
    assert!(received.status.success(), "amqtt_sub over ws: {}", describe(&received));
    assert_eq!(received.stdout, b"over tls\n");

    let published = run(PUB, &["--url", &ws, "-t", "cli/ws", "-m", "over ws", "-r", "-q", "2"]).await;
    assert!(published.status.success(), "amqtt_pub over ws: {}", describe(&published));
    let received = run(SUB, &["--url", &mqtts, "--ca-file", &ca, "-t", "cli/ws", "-n", "1", "-v"]).await;
    assert!(received.status.success(), "amqtt_sub over mqtts: {}", describe(&received));
    assert_eq!(received.stdout, b"cli/ws over ws\n");
}

/// What the commands say and return when TLS cannot work: an untrusted broker (status 2, with
/// the flag to use), a CA file that is not there (status 1, naming it), malformed
/// `--extra-headers` (status 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tls_failures() {
    let pki = Pki::new();
    let Some(mosquitto) = Mosquitto::start_with(&[&pki.listener("other-ca-server")]).await else { return };
    let url = mosquitto.extra_url(0, "mqtts", "127.0.0.1", "");
    let ca = pki.ca().display().to_string();

    let untrusted = run(PUB, &["--url", &url, "--ca-file", &ca, "-t", "t", "-m", "x"]).await;
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(2), "{}", describe(&untrusted));
    assert!(stderr.contains("not signed by a trusted CA") && stderr.contains("--ca-file"), "{stderr}");

    let missing = pki.path("nope.pem").display().to_string();
    let unreadable = run(SUB, &["--url", &url, "--ca-file", &missing, "-t", "t"]).await;
    assert_eq!(unreadable.status.code(), Some(1), "{}", describe(&unreadable));
    assert!(String::from_utf8_lossy(&unreadable.stderr).contains(&missing), "{}", describe(&unreadable));

    let malformed = run(SUB, &["--url", "ws://127.0.0.1:1/", "--extra-headers", "[1, 2]", "-t", "t"]).await;
    assert_eq!(malformed.status.code(), Some(1), "{}", describe(&malformed));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("JSON object"), "{}", describe(&malformed));
}

/// Our own broker, in process, with a TLS, a mutual-TLS, a WebSocket and a WebSocket-over-TLS
/// listener: this client round-trips over each, and is refused without a client certificate
/// where one is required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_broker_over_every_transport() {
    let pki = Pki::new();
    let server = pki.pair("server");
    let tls = format!("ssl: on\n    certfile: {}\n    keyfile: {}", server.cert.display(), server.key.display());
    let yaml = format!(
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n  tls:\n    type: tcp\n    bind: 127.0.0.1:0\n    \
         {tls}\n  mtls:\n    type: tcp\n    bind: 127.0.0.1:0\n    {tls}\n    cafile: {}\n    require-certificate: true\n  \
         ws:\n    type: ws\n    bind: 127.0.0.1:0\n  wss:\n    type: ws\n    bind: 127.0.0.1:0\n    {tls}\n",
        pki.ca().display()
    );
    let (config, warnings) = amqtt_broker::Config::from_yaml_str(&yaml, None).expect("config loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    let broker = amqtt_broker::Broker::new(config).workers(2).start().expect("broker starts");
    let port = |name: &str| broker.local_addr(name).expect("listener").port();

    let tcp = connected(&format!("mqtt://127.0.0.1:{}", port("default")), "own-tcp", test_config()).await;
    let client = pki.pair("client");
    let mut with_certificate = trusting(&pki.ca());
    with_certificate.connection.certfile = Some(client.cert);
    with_certificate.connection.keyfile = Some(client.key);
    let urls = [
        (format!("mqtts://localhost:{}", port("tls")), trusting(&pki.ca())),
        (format!("mqtts://127.0.0.1:{}", port("mtls")), with_certificate),
        (format!("ws://127.0.0.1:{}/mqtt", port("ws")), test_config()),
        (format!("wss://localhost:{}/", port("wss")), trusting(&pki.ca())),
    ];
    for (i, (url, config)) in urls.into_iter().enumerate() {
        let client = connected(&url, &format!("own-{i}"), config).await;
        round_trip(&client, &tcp, &format!("own/{i}/in")).await;
        round_trip(&tcp, &client, &format!("own/{i}/out")).await;
        client.disconnect().await.expect("disconnect");
    }
    match connect_error(&format!("mqtts://127.0.0.1:{}", port("mtls")), trusting(&pki.ca())).await {
        ClientError::Tls { reason, .. } => assert!(reason.contains("--cert-file"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    broker.stop();
}
