//! The `amqtt_pub` and `amqtt_sub` commands end to end: the built binaries run as child
//! processes against an in-process broker on a free port.
//!
//! A subscriber process is known to be subscribed once it printed the retained marker
//! published before it started ([`Sub::start`]); every wait ends on the awaited output or
//! exit, bounded by [`WAIT`]. Every child is killed when its handle drops.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use amqtt_broker::{Broker, Config, RunningBroker};
use amqtt_client::{ClientConfig, Message, MqttClient, QoS};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

const PUB: &str = env!("CARGO_BIN_EXE_amqtt_pub");
const SUB: &str = env!("CARGO_BIN_EXE_amqtt_sub");

/// Bound on any awaited event; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(20);

/// The retained marker a subscriber process prints first: it proves the subscription is made.
const READY_TOPIC: &str = "ready";
const READY: &[u8] = b"ready";

fn start_broker_with(extra: &str) -> RunningBroker {
    let yaml = format!("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n{extra}");
    let (config, warnings) = Config::from_yaml_str(&yaml, None).expect("test config must load");
    assert!(warnings.is_empty(), "unexpected config warnings: {warnings:?}");
    Broker::new(config).workers(2).start().expect("broker must start")
}

fn start_broker() -> RunningBroker {
    start_broker_with("")
}

fn url_of(broker: &RunningBroker) -> String {
    format!("mqtt://{}", broker.listeners()[0].addr)
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args).env_remove("RUST_LOG").kill_on_drop(true);
    command
}

/// Runs a command to its end with `stdin` as input; killed if it takes longer than [`WAIT`].
async fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(program, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    let mut input = child.stdin.take().expect("piped");
    // Written while the command runs: it may only read stdin after connecting.
    let stdin = stdin.to_vec();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not end within {WAIT:?}"))
        .expect("wait");
    writer.await.expect("stdin writer");
    output
}

/// Runs `amqtt_pub` to its end and checks it succeeded.
async fn publish(url: &str, args: &[&str], stdin: &[u8]) {
    let output = run(PUB, &[&["--url", url], args].concat(), stdin).await;
    assert!(output.status.success(), "amqtt_pub {args:?} failed: {}", describe(&output));
}

fn describe(output: &Output) -> String {
    format!(
        "{}; stdout {:?}; stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A library client connected to `url`.
async fn client(url: &str, id: &str) -> MqttClient {
    let client = MqttClient::new(Some(id), ClientConfig { reconnect_retries: 0, ..ClientConfig::default() });
    tokio::time::timeout(WAIT, client.connect(url)).await.expect("connect timed out").expect("connect");
    client
}

/// A library client subscribed to `filters` at QoS 2.
async fn subscriber(url: &str, id: &str, filters: &[&str]) -> MqttClient {
    let client = client(url, id).await;
    let filters: Vec<_> = filters.iter().map(|filter| (*filter, QoS::ExactlyOnce)).collect();
    client.subscribe(&filters).await.expect("subscribe");
    client
}

async fn next_message(client: &MqttClient) -> Message {
    client.deliver_message(Some(WAIT)).await.expect("a message")
}

/// A running `amqtt_sub` (or `amqtt_pub`) process, killed on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
}

impl Proc {
    fn spawn(program: &str, args: &[&str]) -> Proc {
        let mut child = command(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        Proc { child, stdin, stdout, stderr }
    }

    /// The next line of its stdout, without the newline.
    async fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let read = tokio::time::timeout(WAIT, self.stdout.read_until(b'\n', &mut line)).await;
        let read = read.unwrap_or_else(|_| panic!("no output line within {WAIT:?}; got {line:?} so far"));
        assert!(read.expect("read stdout") > 0, "stdout closed before a line came");
        assert_eq!(line.pop(), Some(b'\n'), "unterminated line {line:?}");
        line
    }

    /// Waits for its exit; returns the status, the rest of its stdout and its stderr.
    async fn exit(mut self) -> (ExitStatus, Vec<u8>, String) {
        self.stdin.take();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {WAIT:?}"))
            .expect("wait");
        let mut rest = Vec::new();
        self.stdout.read_to_end(&mut rest).await.expect("read stdout");
        let mut stderr = Vec::new();
        self.stderr.read_to_end(&mut stderr).await.expect("read stderr");
        (status, rest, String::from_utf8_lossy(&stderr).into_owned())
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args(["-s", signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Process-wide unique suffixes for temporary files.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A temporary file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("amqtt-cli-test-{}", unique()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A subscriber process that has printed the retained marker, so its subscriptions are made.
struct Sub;

impl Sub {
    /// Publishes the retained marker, starts `amqtt_sub` with `args` plus `-t ready`, and waits
    /// for the marker (printed `ready`, or `ready ready` with `-v`).
    async fn start(url: &str, args: &[&str]) -> Proc {
        let marker = client(url, &format!("marker-{}", unique())).await;
        marker.publish(READY_TOPIC, READY, Some(QoS::AtLeastOnce), Some(true)).await.expect("marker");
        marker.disconnect().await.expect("disconnect");
        let mut sub = Proc::spawn(SUB, &[&["--url", url, "-t", READY_TOPIC], args].concat());
        let line = sub.line().await;
        assert!(line == READY || line == b"ready ready", "expected the marker first, got {line:?}");
        sub
    }
}

fn assert_exit_ok(status: ExitStatus, stderr: &str) {
    assert!(status.success(), "exit {status}, stderr {stderr:?}");
}

/// `amqtt_pub -l`: 200 stdin lines (`\n` and `\r\n` terminated) are published at QoS 1, many in
/// flight at once, and arrive in order, without their terminators, at `amqtt_sub -n`, which
/// exits 0 after the last ([MQTT-4.6.0-2] ordered delivery of QoS 1 messages).
#[tokio::test]
async fn lines_from_stdin_arrive_in_order() {
    let broker = start_broker();
    let url = url_of(&broker);
    let mut sub = Sub::start(&url, &["-t", "data", "-q", "1", "-n", "201"]).await;
    let mut input = Vec::new();
    for i in 0..200 {
        input.extend_from_slice(format!("line {i}").as_bytes());
        input.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    publish(&url, &["-t", "data", "-l", "-q", "1"], &input).await;
    for i in 0..200 {
        assert_eq!(String::from_utf8(sub.line().await).expect("UTF-8"), format!("line {i}"));
    }
    let (status, rest, stderr) = sub.exit().await;
    assert_exit_ok(status, &stderr);
    assert!(rest.is_empty(), "nothing after the 200th message: {rest:?}");
}

/// `amqtt_pub -f`: each line of the file is one message, in order, without `\n` / `\r\n`; an
/// empty line is a zero-length message and a last line without terminator counts (QoS 2,
/// [MQTT-4.6.0-3] ordered QoS 2 flows).
#[tokio::test]
async fn file_lines_at_qos_2() {
    let broker = start_broker();
    let url = url_of(&broker);
    let mut contents = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        let line = if i == 150 { String::new() } else { format!("file line {i}") };
        contents.extend_from_slice(line.as_bytes());
        contents.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\n" });
        expected.push(line);
    }
    contents.extend_from_slice(b"no terminator");
    expected.push("no terminator".into());
    let file = TempFile::new(&contents);
    let count = (expected.len() + 1).to_string();
    let mut sub = Sub::start(&url, &["-t", "file", "-q", "2", "-n", &count]).await;
    publish(&url, &["-t", "file", "-f", file.path(), "-q", "2"], b"").await;
    for line in &expected {
        assert_eq!(&String::from_utf8(sub.line().await).expect("UTF-8"), line);
    }
    let (status, _, stderr) = sub.exit().await;
    assert_exit_ok(status, &stderr);
}

/// `amqtt_pub -s`: all of stdin, several lines and bytes that are not UTF-8, is one message
/// with exactly those bytes; `amqtt_sub` writes it raw, followed by one newline.
#[tokio::test]
async fn stdin_as_one_message_keeps_exact_bytes() {
    let broker = start_broker();
    let url = url_of(&broker);
    let payload: &[u8] = b"first line\nsecond\r\n\xff\x00\xfe binary\n\nlast\n";
    let watcher = subscriber(&url, "watcher", &["blob"]).await;
    let sub = Sub::start(&url, &["-t", "blob", "-n", "2"]).await;
    publish(&url, &["-t", "blob", "-s", "-q", "1"], payload).await;
    let message = next_message(&watcher).await;
    assert_eq!(&message.payload[..], payload);
    let (status, rest, stderr) = sub.exit().await;
    assert_exit_ok(status, &stderr);
    assert_eq!(rest, [payload, b"\n"].concat());
}

/// `amqtt_pub -n` publishes a zero-length payload, which `amqtt_sub` prints as an empty line.
#[tokio::test]
async fn no_message_is_zero_length() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = subscriber(&url, "watcher", &["empty"]).await;
    let mut sub = Sub::start(&url, &["-t", "empty", "-n", "2"]).await;
    publish(&url, &["-t", "empty", "-n"], b"").await;
    assert!(next_message(&watcher).await.payload.is_empty());
    assert_eq!(sub.line().await, b"");
    let (status, _, stderr) = sub.exit().await;
    assert_exit_ok(status, &stderr);
}

/// `amqtt_pub -m -q N` publishes with QoS N: a subscriber granted QoS 2 receives each message
/// at the QoS it was published with ([MQTT-3.8.4-6] delivered QoS is the minimum of both).
#[tokio::test]
async fn message_at_each_qos() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = subscriber(&url, "watcher", &["q/#"]).await;
    for (qos, level) in [(QoS::AtMostOnce, "0"), (QoS::AtLeastOnce, "1"), (QoS::ExactlyOnce, "2")] {
        let topic = format!("q/{level}");
        let payload = format!("hello at QoS {level}");
        publish(&url, &["-t", &topic, "-m", &payload, "-q", level], b"").await;
        let message = next_message(&watcher).await;
        assert_eq!((message.topic.as_str(), &message.payload[..], message.qos), (&topic[..], payload.as_bytes(), qos));
        assert!(!message.retain);
    }
}

/// `amqtt_pub -r`: the message is retained and given to a subscriber that comes later, with
/// the retain flag set ([MQTT-3.3.1-5] [MQTT-3.3.1-6]).
#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let broker = start_broker();
    let url = url_of(&broker);
    publish(&url, &["-t", "status/pump", "-m", "on", "-r", "-q", "1"], b"").await;
    let output = run(SUB, &["--url", &url, "-t", "status/pump", "-n", "1"], b"").await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(output.stdout, b"on\n");
    let later = subscriber(&url, "later", &["status/#"]).await;
    let message = next_message(&later).await;
    assert_eq!((&message.payload[..], message.retain), (&b"on"[..], true));
}

/// `amqtt_sub -v` prints `topic payload`, for every filter given with a repeated `-t`.
#[tokio::test]
async fn verbose_prints_topic_and_payload() {
    let broker = start_broker();
    let url = url_of(&broker);
    let mut sub = Sub::start(&url, &["-v", "-t", "a/#", "-t", "b/+", "-n", "3"]).await;
    publish(&url, &["-t", "a/b/c", "-m", "hello world"], b"").await;
    publish(&url, &["-t", "b/x", "-m", "second", "-q", "2"], b"").await;
    assert_eq!(sub.line().await, b"a/b/c hello world");
    assert_eq!(sub.line().await, b"b/x second");
    let (status, _, stderr) = sub.exit().await;
    assert_exit_ok(status, &stderr);
}

/// The will flags: a subscriber sees the will of an `amqtt_pub` killed (SIGKILL) while
/// connected, with its QoS and retain flag ([MQTT-3.1.2-8] will published on a connection
/// closed without DISCONNECT).
#[tokio::test]
async fn will_of_a_killed_publisher() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = subscriber(&url, "watcher", &["alive", "will/#"]).await;
    let mut publisher = Proc::spawn(
        PUB,
        &[
            "--url",
            &url,
            "-t",
            "alive",
            "-l",
            "--will-topic",
            "will/pub",
            "--will-message",
            "publisher gone",
            "--will-qos",
            "1",
            "--will-retain",
        ],
    );
    // One line, stdin kept open: the publisher is connected once the line arrives.
    let stdin = publisher.stdin.as_mut().expect("piped");
    stdin.write_all(b"here\n").await.expect("write stdin");
    stdin.flush().await.expect("flush stdin");
    let message = next_message(&watcher).await;
    assert_eq!((message.topic.as_str(), &message.payload[..]), ("alive", &b"here"[..]));
    publisher.child.start_kill().expect("SIGKILL");
    let message = next_message(&watcher).await;
    assert_eq!(
        (message.topic.as_str(), &message.payload[..], message.qos),
        ("will/pub", &b"publisher gone"[..], QoS::AtLeastOnce)
    );
    // Retained: a later subscriber gets it too.
    let later = subscriber(&url, "later", &["will/pub"]).await;
    let message = next_message(&later).await;
    assert_eq!((&message.payload[..], message.retain), (&b"publisher gone"[..], true));
}

/// SIGTERM and SIGINT stop `amqtt_sub` cleanly: exit 0 after DISCONNECT, so the broker drops
/// its will instead of publishing it ([MQTT-3.1.2-10] will removed on DISCONNECT).
#[tokio::test]
async fn sub_disconnects_cleanly_on_sigterm_and_sigint() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = subscriber(&url, "watcher", &["will/sub"]).await;
    for signal in ["TERM", "INT"] {
        let sub = Sub::start(&url, &["-t", "x", "--will-topic", "will/sub", "--will-message", "unexpected"]).await;
        sub.signal(signal);
        let (status, _, stderr) = sub.exit().await;
        assert_exit_ok(status, &stderr);
        // Nothing on the will topic before this marker.
        publish(&url, &["-t", "will/sub", "-m", signal, "-q", "1"], b"").await;
        let message = next_message(&watcher).await;
        assert_eq!(&message.payload[..], signal.as_bytes(), "the will was published after SIG{signal}");
    }
}

/// SIGINT stops `amqtt_pub -l` waiting on an open stdin: everything read was confirmed, so it
/// exits 0, after DISCONNECT (its will is not published, [MQTT-3.1.2-10]).
#[tokio::test]
async fn pub_disconnects_cleanly_on_sigint() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = subscriber(&url, "watcher", &["lines", "will/pub"]).await;
    let args = ["--url", &url, "-t", "lines", "-l", "-q", "1", "--will-topic", "will/pub", "--will-message", "x"];
    let mut publisher = Proc::spawn(PUB, &args);
    let stdin = publisher.stdin.as_mut().expect("piped");
    stdin.write_all(b"one\n").await.expect("write stdin");
    stdin.flush().await.expect("flush stdin");
    assert_eq!(&next_message(&watcher).await.payload[..], b"one");
    publisher.signal("INT");
    let (status, _, stderr) = publisher.exit().await;
    assert_exit_ok(status, &stderr);
    publish(&url, &["-t", "will/pub", "-m", "marker", "-q", "1"], b"").await;
    assert_eq!(&next_message(&watcher).await.payload[..], b"marker", "the will was published after SIGINT");
}

/// A refused connection ([MQTT-3.2.2-5] CONNACK 0x05 when anonymous access is off) ends both
/// commands with status 2 and the reason in words; the same publish with a user name in the
/// URL succeeds.
#[tokio::test]
async fn refused_connection_says_not_authorized() {
    // Only alice (password "secret", a sha512-crypt hash from `openssl passwd -6`) is let in.
    let passwd = std::env::temp_dir().join(format!("amqtt-cli-test-{}.passwd", std::process::id()));
    let hash = "$6$s4ltS4lt$9uHOi55laf.sEEL.nTAfniTJjMMs7SDbYU5h7LVlO0kOSmOWxbm5Xz5q3kpep0HjBmO3KiwhbIAtD0zuw5Z8w0";
    std::fs::write(&passwd, format!("alice:{hash}\n")).expect("write the password file");
    let broker =
        start_broker_with(&format!("auth:\n  allow-anonymous: false\n  password-file: {}\n", passwd.display()));
    let url = url_of(&broker);
    let output = run(SUB, &["--url", &url, "-t", "x"], b"").await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("amqtt_sub: connection refused: not authorized"), "{stderr}");
    let output = run(PUB, &["--url", &url, "-t", "x", "-m", "m"], b"").await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("amqtt_pub: connection refused: not authorized"), "{stderr}");

    let with_user = url.replace("mqtt://", "mqtt://alice:secret@");
    publish(&with_user, &["-t", "x", "-m", "m"], b"").await;
}

/// An address where nothing listens (bound for a moment to get a free port, then released).
async fn unused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("mqtt://{}", listener.local_addr().expect("addr"))
}

/// An unreachable broker: status 2 and a message saying so, after the retries of the config
/// file (`reconnect_retries: 1`: two attempts) or, by default, two retries (three attempts).
#[tokio::test]
async fn unreachable_broker_says_so_after_the_retries() {
    let url = unused_url().await;
    let config = TempFile::new(b"reconnect_retries: 1\nreconnect_max_interval: 1\n");
    let output = run(PUB, &["--url", &url, "-c", config.path(), "-t", "x", "-m", "m"], b"").await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("amqtt_pub: cannot reach {url} after 2 attempts")), "{stderr}");

    let output = run(SUB, &["--url", &url, "-t", "x"], b"").await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("amqtt_sub: cannot reach {url} after 3 attempts")), "{stderr}");
}

/// `-c`: the config file's `connection.uri` is used without `--url`, and its `default_qos`
/// applies when `-q` is not given.
#[tokio::test]
async fn config_file_gives_url_and_defaults() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = subscriber(&url, "watcher", &["cfg"]).await;
    let config = TempFile::new(format!("connection:\n  uri: {url}\ndefault_qos: 1\n").as_bytes());
    let output = run(PUB, &["-c", config.path(), "-t", "cfg", "-m", "from config"], b"").await;
    assert!(output.status.success(), "{}", describe(&output));
    let message = next_message(&watcher).await;
    assert_eq!((&message.payload[..], message.qos), (&b"from config"[..], QoS::AtLeastOnce));
}

/// Usage errors exit with status 1 and say what is wrong.
#[tokio::test]
async fn usage_errors_exit_1() {
    let cases: &[(&str, &[&str], &str)] = &[
        (PUB, &["-m", "x"], "--topic"),
        (PUB, &["-t", "x"], "required"),
        (PUB, &["-t", "x", "-m", "a", "-n"], "cannot be used with"),
        (PUB, &["-t", "x", "-l", "-s"], "cannot be used with"),
        (PUB, &["-t", "x", "-m", "a", "-q", "3"], "QoS must be 0, 1 or 2"),
        (PUB, &["-t", "a/+", "-m", "a"], "invalid topic"),
        (PUB, &["-t", "x", "-f", "/nonexistent/amqtt-cli-file"], "cannot read /nonexistent/amqtt-cli-file"),
        (PUB, &["-t", "x", "-m", "a", "--will-topic", "w"], "--will-message"),
        (PUB, &["-t", "x", "-m", "a", "--cert-file", "c.pem"], "--key-file"),
        (PUB, &["-t", "x", "-m", "a", "-c", "/nonexistent/amqtt-cli.yaml"], "cannot read"),
        (SUB, &[], "--topic"),
        (SUB, &["-t", "x", "-n", "0"], "-n"),
        (SUB, &["-t", "a/#/b"], "invalid topic filter"),
    ];
    for (program, args, expected) in cases {
        let output = run(program, args, b"").await;
        assert_eq!(output.status.code(), Some(1), "{program} {args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{program} {args:?}: {stderr:?} should mention {expected:?}");
    }
}

const COMMON_FLAGS: &[&str] = &[
    "--url",
    "-c, --config-file",
    "-i, --client-id",
    "-q, --qos",
    "-t, --topic",
    "-k, --keep-alive",
    "--clean-session",
    "--ca-file",
    "--ca-path",
    "--ca-data",
    "--cert-file",
    "--key-file",
    "--insecure",
    "--will-topic",
    "--will-message",
    "--will-qos",
    "--will-retain",
    "--extra-headers",
    "-d, --debug",
    "--version",
    "Exit status",
];

/// `--help` of each command lists every flag, and `--version` prints the version; both exit 0.
#[tokio::test]
async fn help_mentions_every_flag_and_version() {
    let pub_flags = ["-r, --retain", "-m, --message", "-f, --file", "-s, --stdin", "-l, --lines", "-n, --no-message"];
    let sub_flags = ["-n <COUNT>", "-v, --verbose"];
    for (program, own) in [(PUB, &pub_flags[..]), (SUB, &sub_flags[..])] {
        let output = run(program, &["--help"], b"").await;
        assert!(output.status.success(), "{}", describe(&output));
        let help = String::from_utf8_lossy(&output.stdout);
        for flag in COMMON_FLAGS.iter().chain(own) {
            assert!(help.contains(flag), "{program} --help does not mention {flag}:\n{help}");
        }
        let output = run(program, &["--version"], b"").await;
        assert!(output.status.success(), "{}", describe(&output));
        let name = Path::new(program).file_name().and_then(|name| name.to_str()).expect("name");
        assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
    }
}
