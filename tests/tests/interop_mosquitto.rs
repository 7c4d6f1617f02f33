//! Interoperability with Eclipse Mosquitto's command-line clients (`mosquitto_pub`,
//! `mosquitto_sub`, Debian package mosquitto-clients) against an in-process broker.
//!
//! The tools run as child processes killed on drop; every wait is bounded, and the tools' own
//! `-W` timeout is a second safety net. A `mosquitto_sub` is known to be subscribed once it
//! prints a retained "ready" message published before it started (retained messages are sent
//! after the subscription is in place), or, where a retained message would disturb the test,
//! once it prints a marker that a [`TestClient`] publishes repeatedly until it shows up.
//!
//! When the tools are missing the tests print a "skipped" line and pass, unless `CI` is set.

use std::net::SocketAddr;
use std::time::Duration;

use amqtt_tests::process::{peer_available, probe, ChildLines};
use amqtt_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// `-W` for mosquitto_sub: longer than [`WAIT`] so our own timeouts report first.
const TOOL_TIMEOUT: &str = "30";

/// Whether the Mosquitto clients can run (see [`peer_available`]: skipped unless `CI` is set).
fn mosquitto_available() -> bool {
    let missing = ["mosquitto_sub", "mosquitto_pub"].into_iter().find(|tool| probe(tool, &["--help"]).is_none());
    peer_available(missing.map(|tool| format!("{tool} not installed (apt-get install mosquitto-clients)")))
}

/// Starts the Mosquitto tool `program` against `addr` with `args`; with `stdin`, its input is
/// piped (see [`ChildLines::take_stdin`]).
fn tool(program: &str, addr: SocketAddr, args: &[&str], stdin: bool) -> ChildLines {
    let mut command = Command::new(program);
    command.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]).args(args);
    let name = format!("{program} {}", args.join(" "));
    if stdin {
        ChildLines::spawn_with_stdin(&mut command, name)
    } else {
        ChildLines::spawn(&mut command, name)
    }
}

/// Starts `mosquitto_sub` with `args`, and its own timeout as a safety net.
fn mosquitto_sub(addr: SocketAddr, args: &[&str]) -> ChildLines {
    let mut all = vec!["-W", TOOL_TIMEOUT];
    all.extend_from_slice(args);
    tool("mosquitto_sub", addr, &all, false)
}

/// Runs `mosquitto_pub` to completion (for QoS 1 and 2 it exits once the broker has completed
/// the flow) and asserts it succeeded.
async fn mosquitto_pub(addr: SocketAddr, args: &[&str]) {
    tool("mosquitto_pub", addr, args, false).success().await;
}

/// Publishes a retained "ready" message on `topic` from a test client, so that a
/// `mosquitto_sub` started afterwards prints it first, once its subscription is in place.
async fn publish_ready(addr: SocketAddr, topic: &str) {
    let (mut client, _) = TestClient::connect(addr, "ready-publisher", true).await;
    client.publish(topic, b"ready", QoS::AtLeastOnce, true).await;
    client.disconnect().await;
}

/// Starts `mosquitto_sub` with `args` (which must subscribe to `ready_topic`) and waits until
/// it has printed the retained ready message, formatted by `-F '%r %q %t %p'`.
async fn sub_when_ready(addr: SocketAddr, ready_topic: &str, args: &[&str]) -> ChildLines {
    publish_ready(addr, ready_topic).await;
    let mut all = vec!["-F", "%r %q %t %p"];
    all.extend_from_slice(args);
    let mut sub = mosquitto_sub(addr, &all);
    let first = sub.line().await;
    assert!(first.starts_with("1 ") && first.ends_with(&format!(" {ready_topic} ready")), "ready line: {first:?}");
    sub
}

/// [MQTT-3.3.4-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] [MQTT-3.3.5-1] [MQTT-3.3.1-9] mosquitto_pub
/// completes the QoS 0, 1 and 2 flows with the broker (it exits 0 only then), and mosquitto_sub
/// subscribed at that QoS receives the message at that QoS with RETAIN 0.
#[tokio::test]
async fn mosquitto_pub_to_mosquitto_sub_at_qos_0_1_2() {
    if !mosquitto_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    for qos in ["0", "1", "2"] {
        let ready = format!("q{qos}/ready");
        let filter = format!("q{qos}/#");
        let mut sub = sub_when_ready(addr, &ready, &["-t", &filter, "-q", qos, "-C", "2"]).await;
        let topic = format!("q{qos}/data");
        let payload = format!("hello at qos {qos}");
        mosquitto_pub(addr, &["-t", &topic, "-m", &payload, "-q", qos]).await;
        assert_eq!(
            sub.line().await,
            format!("0 {qos} {topic} {payload}"),
            "delivered message (RETAIN QoS topic payload)"
        );
        sub.success().await;
    }
    broker.stop();
}

/// [MQTT-3.3.5-1] [MQTT-4.7.1-2] a `#` subscriber receives, in the `-v` format, every message of
/// several mosquitto_pub processes publishing at the same time.
#[tokio::test]
async fn mosquitto_sub_hash_with_concurrent_mosquitto_pubs() {
    if !mosquitto_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    publish_ready(addr, "ready").await;
    let mut sub = mosquitto_sub(addr, &["-t", "#", "-v", "-q", "1", "-C", "9"]);
    assert_eq!(sub.line().await, "ready ready");
    let pubs: Vec<ChildLines> = (0..8)
        .map(|i| {
            let (topic, payload) = (format!("multi/{}/t{i}", i % 3), format!("payload-{i}"));
            tool("mosquitto_pub", addr, &["-t", &topic, "-m", &payload, "-q", "1"], false)
        })
        .collect();
    for publisher in pubs {
        publisher.success().await;
    }
    let mut got = sub.lines(8).await;
    got.sort();
    let mut expected: Vec<String> = (0..8).map(|i| format!("multi/{}/t{i} payload-{i}", i % 3)).collect();
    expected.sort();
    assert_eq!(got, expected);
    sub.success().await;
    broker.stop();
}

/// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] a message published with `mosquitto_pub -r` is
/// stored and sent, with RETAIN 1, to a mosquitto_sub that subscribes later; [MQTT-3.3.1-10]
/// `mosquitto_pub -r -n` (empty retained) deletes it.
#[tokio::test]
async fn retained_from_mosquitto_pub_reaches_later_mosquitto_sub() {
    if !mosquitto_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    mosquitto_pub(addr, &["-t", "r/state", "-m", "on", "-q", "1", "-r"]).await;
    let mut sub = mosquitto_sub(addr, &["-t", "r/state", "-F", "%r %q %t %p", "-q", "1", "-C", "1"]);
    assert_eq!(sub.line().await, "1 1 r/state on", "retained message with RETAIN 1");
    sub.success().await;
    assert_eq!(broker.stats().retained_messages, 1);

    mosquitto_pub(addr, &["-t", "r/state", "-n", "-q", "1", "-r"]).await;
    // A later subscriber gets nothing stored: a marker on the same filter comes first.
    let mut sub = mosquitto_sub(addr, &["-t", "r/#", "-v", "-q", "1", "-C", "1"]);
    let (mut marker, _) = TestClient::connect(addr, "marker", true).await;
    let line = poll_marker(&mut marker, &mut sub, "r/marker").await;
    assert_eq!(line, "r/marker marker", "nothing retained may arrive before the marker");
    sub.success().await;
    assert_eq!(broker.stats().retained_messages, 0);
    broker.stop();
}

/// Publishes `marker` on `topic` (QoS 0, not retained) every 200 ms until `sub` prints a line;
/// returns that line. For subscribers that a retained ready message would disturb.
async fn poll_marker(marker: &mut TestClient, sub: &mut ChildLines, topic: &str) -> String {
    for _ in 0..50 {
        marker.publish(topic, b"marker", QoS::AtMostOnce, false).await;
        if let Some(line) = sub.line_within(Duration::from_millis(200)).await {
            return line;
        }
    }
    panic!("`{}` never printed a marker on {topic}", sub.name());
}

/// [MQTT-3.3.1-8] [MQTT-3.3.1-9] `mosquitto_sub -R` skips the stale retained message (RETAIN 1
/// because of the new subscription) and prints the live ones (RETAIN 0), even a live message
/// published with the retain flag.
#[tokio::test]
async fn mosquitto_sub_dash_r_ignores_stale_retained() {
    if !mosquitto_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    mosquitto_pub(addr, &["-t", "s/old", "-m", "stale", "-q", "1", "-r"]).await;
    let mut sub = mosquitto_sub(addr, &["-t", "s/#", "-R", "-F", "%r %t %p", "-q", "1"]);
    let (mut marker, _) = TestClient::connect(addr, "marker", true).await;
    assert_eq!(poll_marker(&mut marker, &mut sub, "s/marker").await, "0 s/marker marker");
    mosquitto_pub(addr, &["-t", "s/new", "-m", "live", "-q", "1", "-r"]).await;
    // Markers published before the first one showed up may still be on their way.
    loop {
        let line = sub.line().await;
        if line != "0 s/marker marker" {
            assert_eq!(line, "0 s/new live", "the stale retained message must not be printed");
            break;
        }
    }
    broker.stop();
}

/// [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-4.4.0-1] [MQTT-4.6.0-6] `mosquitto_sub -c -i fixed-id
/// -q 1` (clean session 0) leaves; QoS 1 messages published while it is away are stored in its
/// session, and the next `mosquitto_sub -c -i fixed-id` receives them, in order.
#[tokio::test]
async fn mosquitto_sub_persistent_session_receives_queued_messages() {
    if !mosquitto_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    // -E: exit (with DISCONNECT) once the SUBACK has arrived.
    mosquitto_sub(addr, &["-c", "-i", "fixed-id", "-q", "1", "-t", "away/#", "-E"]).success().await;
    let (mut publisher, _) = TestClient::connect(addr, "publisher", true).await;
    for i in 1..=5 {
        publisher.publish(&format!("away/{i}"), format!("queued {i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }
    let mut sub =
        mosquitto_sub(addr, &["-c", "-i", "fixed-id", "-q", "1", "-t", "away/#", "-F", "%q %t %p", "-C", "6"]);
    let expected: Vec<String> = (1..=5).map(|i| format!("1 away/{i} queued {i}")).collect();
    assert_eq!(sub.lines(5).await, expected);
    // The queued messages may come before the SUBACK of mosquitto_sub's new SUBSCRIBE; if it
    // exited then (-C 5), it would close with the SUBACK unread, the kernel would reset the
    // connection and drop its last PUBACKs, and those messages would rightly be sent again.
    // A marker, routed after the SUBACK, makes it exit with nothing unread.
    publisher.publish("away/marker", b"marker", QoS::AtLeastOnce, false).await;
    assert_eq!(sub.line().await, "1 away/marker marker");
    sub.success().await;

    // Everything was acknowledged: a new connection of the same session gets nothing more.
    let (mut again, present) = TestClient::connect(addr, "fixed-id", false).await;
    assert!(present, "session present on reconnect [MQTT-3.2.2-2]");
    assert_nothing_before_marker(&mut publisher, &mut again, "away/marker").await;
    broker.stop();
}

/// [MQTT-4.6.0-6] `mosquitto_pub -l` publishes each line of its stdin as a message; all of
/// them reach the subscriber in the order sent.
#[tokio::test]
async fn mosquitto_pub_line_mode_many_messages_in_order() {
    if !mosquitto_available() {
        return;
    }
    const COUNT: usize = 500;
    let broker = start_broker();
    let addr = addr(&broker);
    let count = (COUNT + 1).to_string();
    let mut sub = sub_when_ready(addr, "lines/ready", &["-t", "lines/#", "-q", "1", "-C", &count]).await;
    let mut publisher = tool("mosquitto_pub", addr, &["-t", "lines/data", "-q", "1", "-l"], true);
    let mut stdin = publisher.take_stdin();
    let input: String = (0..COUNT).map(|i| format!("line {i:04}\n")).collect();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin); // EOF: mosquitto_pub finishes the in-flight messages and exits
    let expected: Vec<String> = (0..COUNT).map(|i| format!("0 1 lines/data line {i:04}")).collect();
    assert_eq!(sub.lines(COUNT).await, expected);
    publisher.success().await;
    sub.success().await;
    broker.stop();
}

/// [MQTT-3.1.2-19] [MQTT-3.1.2-21] [MQTT-3.1.3-11] a CONNECT carrying a user name and password
/// (`-u`/`-P`) is accepted when anonymous access is allowed, for publisher and subscriber.
#[tokio::test]
async fn username_and_password_accepted_with_allow_anonymous() {
    if !mosquitto_available() {
        return;
    }
    let broker = start_broker_with("auth:\n  allow-anonymous: true\n");
    let addr = addr(&broker);
    let credentials = ["-u", "alice", "-P", "s3cret"];
    let mut args = vec!["-t", "auth/#", "-q", "1", "-C", "2"];
    args.extend_from_slice(&credentials);
    let mut sub = sub_when_ready(addr, "auth/ready", &args).await;
    let mut args = vec!["-t", "auth/data", "-m", "with credentials", "-q", "1"];
    args.extend_from_slice(&credentials);
    mosquitto_pub(addr, &args).await;
    assert_eq!(sub.line().await, "0 1 auth/data with credentials");
    sub.success().await;
    assert_eq!(broker.stats().connections_refused, 0);
    broker.stop();
}
