//! The `amqtt` command as a user runs it: flags, config files, start-up errors, logs, signals.
//!
//! Every test runs the real binary as a child process held by an [`Amqtt`] guard that kills it
//! on drop, reads its stderr line by line on a thread, and waits for log lines or for the
//! process to end (its stderr closing) with a bound, never with a sleep.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amqtt_protocol::{ByteString, Connect, ConnectReturnCode, Packet};
use bytes::{Bytes, BytesMut};

/// Bound on every wait; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How long the broker may take to exit after SIGTERM or SIGINT.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// A config file in a fresh folder under the system temp dir, removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(yaml: &str) -> ConfigFile {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "amqtt-cli-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cannot create temp dir");
        let path = dir.join("amqtt.yaml");
        std::fs::write(&path, yaml).expect("cannot write config file");
        ConfigFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tcp_config(bind: &str, extra: &str) -> ConfigFile {
    ConfigFile::new(&format!("listeners:\n  default:\n    type: tcp\n    bind: {bind}\n{extra}"))
}

/// A running `amqtt` process; killed (and reaped) when dropped.
struct Amqtt {
    child: Child,
    stderr_lines: Receiver<String>,
    stdout: Option<JoinHandle<String>>,
    /// Every stderr line seen so far, for assertions and failure messages.
    stderr: Vec<String>,
}

impl Amqtt {
    fn spawn(args: &[&str]) -> Amqtt {
        let mut child = Command::new(env!("CARGO_BIN_EXE_amqtt"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run amqtt");
        let stderr = child.stderr.take().unwrap();
        let (tx, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Amqtt { child, stderr_lines, stdout: Some(stdout), stderr: Vec::new() }
    }

    fn log(&self) -> String {
        self.stderr.join("\n")
    }

    /// Waits for a stderr line satisfying `matches` and returns it.
    fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no {what} within {WAIT:?}; stderr:\n{}", self.log()),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("amqtt exited ({:?}) before logging {what}; stderr:\n{}", self.child.wait(), self.log())
                }
            }
        }
    }

    /// Waits for the "listening" log line of the default listener and parses its address.
    fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_line("`listening` log line", |l| l.contains("listening") && l.contains("addr="));
        let addr = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next());
        addr.and_then(|a| a.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no parseable addr=IP:PORT in the log line {line:?}"))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `within` for the process to end (its stderr closes when it exits), and
    /// returns its status, with stdout and the whole stderr.
    fn wait_exit(&mut self, within: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => self.stderr.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("amqtt still running after {within:?}; stderr:\n{}", self.log())
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = self.child.wait().expect("cannot wait for amqtt");
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        (status, stdout, self.log())
    }

    /// For a start-up that must fail: the exit status must be an error; returns stderr.
    fn expect_failure(mut self) -> String {
        let (status, _, stderr) = self.wait_exit(WAIT);
        assert!(!status.success(), "amqtt must fail, exited with {status}; stderr:\n{stderr}");
        assert!(!stderr.contains('\u{1b}'), "colour escapes in piped stderr: {stderr:?}");
        stderr
    }
}

impl Drop for Amqtt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal synchronous MQTT client over the protocol crate's encoder and decoder.
struct MqttClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl MqttClient {
    /// Connects, sends CONNECT (MQTT 3.1.1, clean session) and returns the CONNACK.
    fn connect(addr: SocketAddr, client_id: &str) -> (MqttClient, Packet) {
        let stream = TcpStream::connect(addr).expect("cannot connect to amqtt");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut client = MqttClient { stream, buf: BytesMut::new() };
        client.send(Packet::Connect(Connect {
            protocol_name: ByteString::from_static("MQTT"),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
        }));
        let connack = client.recv().expect("connection closed instead of CONNACK");
        (client, connack)
    }

    fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out).expect("encode");
        self.stream.write_all(&out).expect("send failed");
    }

    /// The next packet, or None when the broker closed the connection.
    fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(len) = amqtt_protocol::frame_len(&self.buf, usize::MAX).expect("malformed header") {
                let frame: Bytes = self.buf.split_to(len).freeze();
                return Some(Packet::read(frame).expect("malformed packet from amqtt"));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("no packet from amqtt: {error}"),
            }
        }
    }
}

fn assert_accepted(connack: &Packet) {
    match connack {
        Packet::ConnAck(ack) => assert_eq!(ack.code, ConnectReturnCode::Accepted, "CONNACK return code [MQTT-3.2.2-3]"),
        other => panic!("expected CONNACK [MQTT-3.2.0-1], got {other:?}"),
    }
}

fn started_with(extra: &str, flags: &[&str]) -> (Amqtt, SocketAddr, ConfigFile) {
    let config = tcp_config("127.0.0.1:0", extra);
    let mut args = vec!["-c", config.path()];
    args.extend_from_slice(flags);
    let mut amqtt = Amqtt::spawn(&args);
    let addr = amqtt.listening_addr();
    (amqtt, addr, config)
}

#[test]
fn help_lists_config_and_debug_flags() {
    let (status, stdout, stderr) = Amqtt::spawn(&["--help"]).wait_exit(WAIT);
    assert!(status.success(), "--help: {status}; stderr:\n{stderr}");
    for flag in ["-c", "--config", "-d", "--debug"] {
        assert!(
            stdout.split(|c: char| c.is_whitespace() || c == ',').any(|w| w == flag),
            "--help lacks {flag}:\n{stdout}"
        );
    }
}

#[test]
fn version_prints_the_package_version() {
    let (status, stdout, stderr) = Amqtt::spawn(&["--version"]).wait_exit(WAIT);
    assert!(status.success(), "--version: {status}; stderr:\n{stderr}");
    assert_eq!(stdout.trim(), format!("amqtt {}", env!("CARGO_PKG_VERSION")));
}

/// [MQTT-3.2.0-1] [MQTT-3.2.2-3] a broker started from a config file logs its bound address
/// and answers CONNECT with an accepting CONNACK; its logs carry no colour codes in a pipe.
#[test]
fn config_file_broker_logs_address_and_accepts_clients() {
    let (mut amqtt, addr, _config) = started_with("", &[]);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "logged address {addr}");
    let (_client, connack) = MqttClient::connect(addr, "cli-test");
    assert_accepted(&connack);
    amqtt.signal("TERM");
    let (status, _, stderr) = amqtt.wait_exit(SHUTDOWN);
    assert!(status.success(), "exit status after SIGTERM: {status}; stderr:\n{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour escapes in piped stderr: {stderr:?}");
}

fn stops_cleanly_on(signal: &str) {
    let (mut amqtt, addr, _config) = started_with("", &[]);
    let (mut client, connack) = MqttClient::connect(addr, "connected-during-shutdown");
    assert_accepted(&connack);
    amqtt.signal(signal);
    let (status, _, stderr) = amqtt.wait_exit(SHUTDOWN);
    assert!(status.success(), "exit status after SIG{signal}: {status}; stderr:\n{stderr}");
    assert_eq!(client.recv(), None, "the client's connection must be closed when the broker stops");
}

/// A broker with a connected client exits with status 0 within 5 s of SIGTERM.
#[test]
fn sigterm_stops_with_status_zero() {
    stops_cleanly_on("TERM");
}

/// A broker with a connected client exits with status 0 within 5 s of SIGINT (Ctrl-C).
#[test]
fn sigint_stops_with_status_zero() {
    stops_cleanly_on("INT");
}

#[test]
fn invalid_value_fails_naming_the_key_path() {
    let config = tcp_config("127.0.0.1:0", "sys_interval: x\n");
    let stderr = Amqtt::spawn(&["-c", config.path()]).expect_failure();
    assert!(stderr.contains("sys_interval"), "stderr must name the key sys_interval:\n{stderr}");
    assert!(!stderr.contains("listening"), "the broker must not start:\n{stderr}");
}

#[test]
fn invalid_bind_fails_naming_the_key_path() {
    let config = ConfigFile::new("listeners:\n  default:\n    bind: \"nope\"\n");
    let stderr = Amqtt::spawn(&["-c", config.path()]).expect_failure();
    assert!(stderr.contains("listeners.default.bind"), "stderr must name listeners.default.bind:\n{stderr}");
    assert!(stderr.contains("nope"), "stderr must quote the bad value:\n{stderr}");
}

#[test]
fn unknown_key_warns_with_its_path_and_broker_starts() {
    let config = tcp_config("127.0.0.1:0", "auth:\n  allow-anonymous: true\n  no-such-option: 1\n");
    let mut amqtt = Amqtt::spawn(&["-c", config.path()]);
    let warning = amqtt.wait_for_line("warning about the unknown key", |l| l.contains("WARN"));
    assert!(warning.contains("auth.no-such-option"), "warning must name the key path: {warning}");
    let addr = amqtt.listening_addr();
    let (_client, connack) = MqttClient::connect(addr, "after-warning");
    assert_accepted(&connack);
}

#[test]
fn missing_config_file_fails_naming_the_file() {
    let config = ConfigFile::new("");
    let missing = Path::new(config.path()).with_file_name("does-not-exist.yaml");
    let missing = missing.to_str().unwrap();
    let stderr = Amqtt::spawn(&["-c", missing]).expect_failure();
    let message = stderr
        .lines()
        .find(|l| l.starts_with("amqtt: "))
        .unwrap_or_else(|| panic!("no `amqtt: ` error line:\n{stderr}"));
    assert!(message.contains(missing), "error must name the file: {message}");
    let cause = std::io::Error::from_raw_os_error(2).to_string();
    assert_eq!(message.matches(&cause).count(), 1, "the cause ({cause}) is printed once: {message}");
}

/// A ws listener upgrades a WebSocket request offering `mqtt`, and the broker still stops cleanly
/// on SIGTERM with the connection open.
#[test]
fn websocket_listener_upgrades_and_stops_on_sigterm() {
    let config = ConfigFile::new("listeners:\n  default:\n    type: ws\n    bind: 127.0.0.1:0\n");
    let mut amqtt = Amqtt::spawn(&["-c", config.path()]);
    let addr = amqtt.listening_addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("no upgrade response"), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: mqtt\r\n"), "{head}");
    amqtt.signal("TERM");
    let (status, _, stderr) = amqtt.wait_exit(SHUTDOWN);
    assert!(status.success(), "{status}:\n{stderr}");
}

/// Without -d there is no debug output; with -d a client connecting is logged at debug level.
#[test]
fn debug_flag_enables_debug_logs() {
    let (mut quiet, addr, _config) = started_with("", &[]);
    let (_client, connack) = MqttClient::connect(addr, "quiet");
    assert_accepted(&connack);
    quiet.signal("TERM");
    let (status, _, stderr) = quiet.wait_exit(SHUTDOWN);
    assert!(status.success(), "{status}");
    assert!(!stderr.contains("DEBUG"), "debug lines without -d:\n{stderr}");

    let (mut verbose, addr, _config) = started_with("", &["-d"]);
    let (_client, connack) = MqttClient::connect(addr, "verbose");
    assert_accepted(&connack);
    verbose.wait_for_line("debug line for the client connection", |l| l.contains("DEBUG") && l.contains("connection"));
}

#[test]
fn port_taken_by_another_socket_fails_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = tcp_config(&addr.to_string(), "");
    let stderr = Amqtt::spawn(&["-c", config.path()]).expect_failure();
    assert!(stderr.contains(&addr.to_string()), "error must name {addr}:\n{stderr}");
    assert!(stderr.contains("cannot bind"), "error must say the bind failed:\n{stderr}");
    drop(taken);
}

#[test]
fn second_broker_on_the_same_port_fails_and_first_keeps_serving() {
    let (_first, addr, _config) = started_with("", &[]);
    let config = tcp_config(&addr.to_string(), "");
    let stderr = Amqtt::spawn(&["-c", config.path()]).expect_failure();
    assert!(stderr.contains(&addr.to_string()), "error must name {addr}:\n{stderr}");
    let (_client, connack) = MqttClient::connect(addr, "still-served");
    assert_accepted(&connack);
}
