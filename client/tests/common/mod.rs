//! Helpers shared by the client's integration tests: an in-process broker on a free port, a
//! Mosquitto broker run as a child process, and a scripted fake broker that speaks raw packets.
//!
//! Every wait is bounded by [`WAIT`] and ends on the awaited event, never on a sleep.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use amqtt_broker::{Broker, Config, RunningBroker};
use amqtt_client::{ClientConfig, Message, MqttClient, QoS};
use amqtt_protocol::{ConnAck, Connect, ConnectReturnCode, MqttCodec, Packet};
use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_util::codec::Decoder;

/// How long a test waits for something that should happen. Generous: it only matters when a
/// test is failing, since every wait ends on the awaited event.
pub const WAIT: Duration = Duration::from_secs(10);

pub const QOS_ALL: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// A broker on 127.0.0.1 with a free port, configured by `extra` YAML (aMQTT schema) besides
/// its listener.
pub fn start_broker_with(extra: &str) -> RunningBroker {
    start_broker_on("127.0.0.1:0", extra)
}

pub fn start_broker() -> RunningBroker {
    start_broker_with("")
}

/// A broker listening on `bind`, e.g. the port of a broker stopped a moment ago.
pub fn start_broker_on(bind: &str, extra: &str) -> RunningBroker {
    let yaml = format!("listeners:\n  default:\n    type: tcp\n    bind: {bind}\n{extra}");
    let (config, warnings) = Config::from_yaml_str(&yaml, None).expect("test config must load");
    assert!(warnings.is_empty(), "unexpected config warnings: {warnings:?}");
    Broker::new(config).workers(2).start().expect("broker must start")
}

/// `auth` YAML that lets in only the users of a password file holding `lines` (`user:hash`),
/// written to a fresh temporary file.
pub fn password_auth(lines: &[&str]) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("amqtt-client-test-{}-{n}.passwd", std::process::id()));
    std::fs::write(&path, lines.join("\n")).expect("write the password file");
    format!("auth:\n  allow-anonymous: false\n  password-file: {}\n", path.display())
}

/// sha512-crypt (`openssl passwd -6`) hashes, quick to verify, for [`password_auth`].
pub const HASH_OF_P_COLON_SS: &str =
    "$6$s4ltS4lt$XaMzSAvey7yV.Ej0dkuTPoHmDMDXqYlJmgRU1vIao5Q6O6k.0ShTLVCJRPE51NPRptQhCmLKe40O/Rkws4/i.0";
pub const HASH_OF_CFG_PASS: &str =
    "$6$s4ltS4lt$25GG/DkCxw5Oy4EK5oXaNX2M87MTjcmWQDVKTr56xTUdFEBoAVR7P.ee2/5Td4pbnQYcgOZj3vhU6.9JrTNR10";

pub fn url_of(broker: &RunningBroker) -> String {
    format!("mqtt://{}", broker.listeners()[0].addr)
}

/// A client configuration for tests: the defaults, with reconnection limited so that a failing
/// test ends quickly.
pub fn test_config() -> ClientConfig {
    ClientConfig { reconnect_retries: 1, reconnect_max_interval: 1, ..ClientConfig::default() }
}

/// A client connected to `url`.
pub async fn connected(url: &str, client_id: &str, config: ClientConfig) -> MqttClient {
    let client = MqttClient::new(Some(client_id), config);
    tokio::time::timeout(WAIT, client.connect(url))
        .await
        .unwrap_or_else(|_| panic!("{client_id}: connect timed out"))
        .unwrap_or_else(|error| panic!("{client_id}: connect failed: {error}"));
    client
}

/// The next message `client` receives; fails the test if none comes within [`WAIT`].
pub async fn next_message(client: &MqttClient) -> Message {
    client
        .deliver_message(Some(WAIT))
        .await
        .unwrap_or_else(|error| panic!("{}: no message: {error}", client.client_id()))
}

/// Proves that `subscriber` received nothing before `marker_topic`'s message: publishes a
/// marker (to which the subscriber must be subscribed) and checks it is the next message.
pub async fn assert_nothing_before_marker(publisher: &MqttClient, subscriber: &MqttClient, marker_topic: &str) {
    publisher.publish(marker_topic, "marker", Some(QoS::AtLeastOnce), Some(false)).await.expect("marker published");
    let message = next_message(subscriber).await;
    assert_eq!(message.topic, marker_topic, "expected only the marker, got {message:?}");
}

/// An address where nothing listens (bound for a moment to get a free port, then released).
pub async fn unused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// Whether the environment variable `CI` is set to something other than empty, `0` or `false`.
pub fn ci_is_set() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto broker on a free port of 127.0.0.1, killed (and its directory removed) on drop.
/// Optionally with more listeners ([`Mosquitto::start_with`]).
pub struct Mosquitto {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// The ports of the listeners given to [`Mosquitto::start_with`], in order.
    pub extra_ports: Vec<u16>,
    extra: Vec<String>,
}

impl Mosquitto {
    /// Starts Mosquitto and waits until it reports that it runs. None (with a visible "skipped"
    /// line) when it is not installed; with CI set that fails the test instead.
    pub async fn start() -> Option<Mosquitto> {
        Mosquitto::start_with(&[]).await
    }

    /// Starts Mosquitto with its plain listener and one more listener per `extra` entry, on
    /// [`extra_ports`](Self::extra_ports), each configured by the entry's lines (mosquitto.conf
    /// options of a listener: `protocol websockets`, `certfile ...`, `require_certificate true`).
    /// Mosquitto 2.0 refuses to start with WebSocket listeners only, hence the plain one.
    pub async fn start_with(extra: &[&str]) -> Option<Mosquitto> {
        if !std::path::Path::new(MOSQUITTO).exists() {
            assert!(!ci_is_set(), "{MOSQUITTO} not found; CI is set, so a missing interop peer is a failure");
            use std::io::Write;
            // Straight to stderr, past the test harness's output capture, so the skip is visible.
            let _ = writeln!(std::io::stderr(), "skipped: mosquitto not installed (apt-get install mosquitto)");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "amqtt-client-mosquitto-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The free port is released before Mosquitto binds it, so a test running beside this one
        // may take it first: then Mosquitto exits, and another port is tried.
        for attempt in 1..=3 {
            // Bound together, so that they differ.
            let mut listeners = Vec::new();
            for _ in 0..=extra.len() {
                listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
            }
            let mut ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect();
            drop(listeners);
            let port = ports.remove(0);
            let extra: Vec<String> = extra.iter().map(|lines| lines.to_string()).collect();
            match Mosquitto::start_on(port, &ports, &extra, &dir).await {
                Ok(child) => return Some(Mosquitto { child, dir, port, extra_ports: ports, extra }),
                Err(failure) if attempt < 3 && port_taken(&failure) => continue,
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("no free ports for mosquitto after 3 attempts")
    }

    /// Stops Mosquitto and starts it again on the same ports, as a broker restart.
    pub async fn restart(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.child = Mosquitto::start_on(self.port, &self.extra_ports, &self.extra, &self.dir)
            .await
            .unwrap_or_else(|failure| panic!("restart: {failure}"));
    }

    async fn start_on(
        port: u16,
        extra_ports: &[u16],
        extra: &[String],
        dir: &std::path::Path,
    ) -> Result<Child, String> {
        let conf = dir.join("mosquitto.conf");
        let mut text = format!("allow_anonymous true\nlog_dest stderr\nlistener {port} 127.0.0.1\n");
        for (port, lines) in extra_ports.iter().zip(extra) {
            text.push_str(&format!("listener {port} 127.0.0.1\n{lines}\n"));
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its log, unbuffered there (stdout would be block-buffered in a pipe).
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {MOSQUITTO}: {error}"));
        // Mosquitto logs "mosquitto version X running" once its listeners are open.
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut log = Vec::new();
        let running = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let running = line.contains(" running");
                log.push(line);
                if running {
                    return true;
                }
            }
            false
        })
        .await;
        if running != Ok(true) {
            let status = child.try_wait();
            return Err(format!("mosquitto did not start on port {port} (exit status {status:?}); its log: {log:?}"));
        }
        // Keep draining its log so that a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(child)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `scheme://host:port/path` of the listener `extra[index]` of [`Mosquitto::start_with`].
    pub fn extra_url(&self, index: usize, scheme: &str, host: &str, path: &str) -> String {
        format!("{scheme}://{host}:{}{path}", self.extra_ports[index])
    }
}

/// Whether Mosquitto failed because one of its ports was taken meanwhile.
fn port_taken(failure: &str) -> bool {
    failure.contains("Address already in use") || failure.contains("Unable to create websockets listener")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A scripted broker: the test accepts the client's connections and exchanges raw packets, to
/// check the exact bytes of the client's flows (DUP, packet ids, re-sends).
pub struct FakeBroker {
    listener: TcpListener,
}

impl FakeBroker {
    pub async fn start() -> FakeBroker {
        FakeBroker { listener: TcpListener::bind("127.0.0.1:0").await.expect("bind") }
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.listener.local_addr().expect("local addr"))
    }

    /// Accepts the next connection and reads its CONNECT.
    pub async fn accept(&self) -> (FakeConnection, Connect) {
        let (stream, _) =
            tokio::time::timeout(WAIT, self.listener.accept()).await.expect("no connection came").expect("accept");
        let mut connection = FakeConnection { stream, rbuf: BytesMut::new(), codec: MqttCodec::default() };
        match connection.recv().await {
            Packet::Connect(connect) => (connection, connect),
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }

    /// Accepts the next connection and answers CONNACK accepted with `session_present`.
    pub async fn accept_session(&self, session_present: bool) -> (FakeConnection, Connect) {
        let (mut connection, connect) = self.accept().await;
        connection.send(ConnAck { session_present, code: ConnectReturnCode::Accepted }).await;
        (connection, connect)
    }
}

pub struct FakeConnection {
    stream: TcpStream,
    rbuf: BytesMut,
    codec: MqttCodec,
}

impl FakeConnection {
    pub async fn send(&mut self, packet: impl Into<Packet>) {
        let mut buf = BytesMut::new();
        packet.into().write(&mut buf).expect("encodes");
        self.stream.write_all(&buf).await.expect("write to client");
    }

    /// The next packet from the client; fails the test if none comes within [`WAIT`].
    pub async fn recv(&mut self) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(packet) = self.codec.decode(&mut self.rbuf).expect("valid packet from the client") {
                    return packet;
                }
                let n = self.stream.read_buf(&mut self.rbuf).await.expect("read from client");
                assert!(n > 0, "the client closed the connection");
            }
        })
        .await
        .expect("the client sent nothing")
    }

    /// Waits until the client closes the connection, returning the packets it sent before.
    pub async fn closed(&mut self) -> Vec<Packet> {
        tokio::time::timeout(WAIT, async {
            let mut packets = Vec::new();
            loop {
                while let Some(packet) = self.codec.decode(&mut self.rbuf).expect("valid packet from the client") {
                    packets.push(packet);
                }
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => return packets,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the client did not close the connection")
    }
}
