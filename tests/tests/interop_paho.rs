//! Interoperability with Eclipse Paho for Python (paho-mqtt 2.x) against an in-process broker.
//!
//! Paho is driven by `tests/interop/paho_client.py`, run as a child process (killed on drop)
//! that prints one line per event; the tests read those lines with a bound and check the
//! script's exit status (0 only when every flow it ran completed as expected).
//!
//! When python3 or paho-mqtt 2.x is missing the tests print a "skipped" line and pass, unless
//! `CI` is set.

use std::net::SocketAddr;

use amqtt_tests::process::{peer_available, probe, ChildLines};
use amqtt_tests::*;
use tokio::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/paho_client.py");

/// Whether python3 with paho-mqtt 2.x can run (see [`peer_available`]: skipped unless `CI` is
/// set).
fn paho_available() -> bool {
    let import = "import paho.mqtt.client as m; m.CallbackAPIVersion.VERSION2";
    let found = probe("python3", &["-c", import]).is_some_and(|status| status.success());
    peer_available((!found).then(|| "python3 paho-mqtt 2.x not installed (python3 -m pip install paho-mqtt)".into()))
}

/// Starts `paho_client.py` in `mode` against `addr` with `args`.
fn spawn_paho(addr: SocketAddr, mode: &str, args: &[&str]) -> ChildLines {
    let mut command = Command::new("python3");
    command
        .arg(SCRIPT)
        .arg(mode)
        .args(["--host", &addr.ip().to_string(), "--port", &addr.port().to_string()])
        .args(args);
    ChildLines::spawn(&mut command, format!("paho_client.py {mode} {}", args.join(" ")))
}

/// Runs the script to completion, asserting it succeeded, and returns everything it printed.
async fn paho(addr: SocketAddr, mode: &str, args: &[&str]) -> Vec<String> {
    spawn_paho(addr, mode, args).output_until_exit().await
}

async fn paho_roundtrip(qos: &str) {
    if !paho_available() {
        return;
    }
    let broker = start_broker();
    let out = paho(addr(&broker), "roundtrip", &["--qos", qos]).await;
    let expected = format!("message topic=paho/qos{qos} qos={qos} retain=0 payload=paho round trip at qos {qos}");
    assert_eq!(out, vec![expected, "ok".to_string()]);
    broker.stop();
}

/// [MQTT-3.3.5-1] [MQTT-3.8.4-5] [MQTT-3.3.1-9] paho to paho through the broker at QoS 0.
#[tokio::test]
async fn paho_roundtrip_qos0() {
    paho_roundtrip("0").await;
}

/// [MQTT-4.3.2-1] [MQTT-4.3.2-2] [MQTT-3.3.5-1] paho to paho at QoS 1: PUBACK both ways.
#[tokio::test]
async fn paho_roundtrip_qos1() {
    paho_roundtrip("1").await;
}

/// [MQTT-4.3.3-1] [MQTT-4.3.3-2] [MQTT-3.3.5-1] paho to paho at QoS 2:
/// PUBREC/PUBREL/PUBCOMP both ways.
#[tokio::test]
async fn paho_roundtrip_qos2() {
    paho_roundtrip("2").await;
}

/// [MQTT-3.3.5-1] [MQTT-3.3.1-9] [MQTT-2.3.1-1] what paho publishes at QoS 0, 1 and 2 reaches a
/// raw QoS 2 subscriber at the publish QoS, RETAIN 0, with a packet id when QoS > 0.
#[tokio::test]
async fn paho_publishes_reach_raw_subscriber() {
    if !paho_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    let (mut sub, _) = TestClient::connect(addr, "raw-sub", true).await;
    sub.subscribe(&[("from-paho/#", QoS::ExactlyOnce)]).await;
    for (qos, expected) in [("0", QoS::AtMostOnce), ("1", QoS::AtLeastOnce), ("2", QoS::ExactlyOnce)] {
        let topic = format!("from-paho/{qos}");
        let out = paho(addr, "publish", &["--topic", &topic, "--payload", "from paho", "--qos", qos]).await;
        assert_eq!(out, vec![format!("published topic={topic} qos={qos} retain=0")]);
        let got = sub.recv_publish().await;
        assert_eq!(
            (got.topic.as_ref() as &str, got.payload.as_ref(), got.qos, got.retain),
            (topic.as_str(), b"from paho".as_ref(), expected, false)
        );
        assert_eq!(got.pkid == 0, expected == QoS::AtMostOnce, "packet id only with QoS > 0: {got:?}");
        sub.ack(&got).await;
    }
    broker.stop();
}

/// [MQTT-4.3.2-1] [MQTT-4.3.3-1] [MQTT-3.3.5-1] a paho subscriber at QoS 2 receives messages a
/// raw client publishes at QoS 0, 1 and 2 at those QoS and completes each flow with the broker.
#[tokio::test]
async fn raw_publishes_reach_paho_subscriber() {
    if !paho_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    let mut paho = spawn_paho(addr, "subscribe", &["--topic", "to-paho/#", "--qos", "2", "--count", "3"]);
    assert_eq!(paho.line().await, "connected session_present=0");
    assert_eq!(paho.line().await, "subscribed granted=2");
    let (mut publisher, _) = TestClient::connect(addr, "raw-pub", true).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
        publisher.publish(&format!("to-paho/{i}"), format!("raw {i}").as_bytes(), qos, false).await;
        assert_eq!(paho.line().await, format!("message topic=to-paho/{i} qos={i} retain=0 payload=raw {i}"));
    }
    assert_eq!(paho.output_until_exit().await, vec!["disconnected"]);
    broker.stop();
}

/// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] a retained message published by paho is sent,
/// RETAIN 1, to a paho client that subscribes later; [MQTT-3.3.1-10] [MQTT-3.3.1-11] an empty
/// retained message from paho deletes it (and is not stored itself).
#[tokio::test]
async fn paho_retained_message_reaches_later_subscriber() {
    if !paho_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    let out = paho(addr, "publish", &["--topic", "kept/state", "--payload", "on", "--qos", "1", "--retain"]).await;
    assert_eq!(out, vec!["published topic=kept/state qos=1 retain=1"]);
    let out = paho(addr, "subscribe", &["--topic", "kept/#", "--qos", "1", "--count", "1"]).await;
    assert_eq!(
        out,
        vec![
            "connected session_present=0",
            "subscribed granted=1",
            "message topic=kept/state qos=1 retain=1 payload=on",
            "disconnected"
        ]
    );

    paho(addr, "publish", &["--topic", "kept/state", "--payload", "", "--qos", "1", "--retain"]).await;
    let mut later = spawn_paho(addr, "subscribe", &["--topic", "kept/#", "--qos", "1", "--count", "1"]);
    assert_eq!(later.line().await, "connected session_present=0");
    assert_eq!(later.line().await, "subscribed granted=1");
    // Anything retained would have been sent with the SUBACK's subscription, before this marker.
    let (mut marker, _) = TestClient::connect(addr, "marker", true).await;
    marker.publish("kept/marker", b"marker", QoS::AtLeastOnce, false).await;
    assert_eq!(later.line().await, "message topic=kept/marker qos=1 retain=0 payload=marker");
    assert_eq!(later.output_until_exit().await, vec!["disconnected"]);
    assert_eq!(broker.stats().retained_messages, 0);
    broker.stop();
}

/// [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] [MQTT-4.6.0-6] a paho client with
/// clean_session=False subscribes and leaves; QoS 1 messages published while it is away are
/// kept and delivered, in order, when it reconnects (session present) without subscribing.
#[tokio::test]
async fn paho_persistent_session_receives_queued_messages() {
    if !paho_available() {
        return;
    }
    let broker = start_broker();
    let addr = addr(&broker);
    let session = ["--client-id", "paho-fixed", "--no-clean-session"];
    let mut args = vec!["--topic", "away/#", "--qos", "1", "--count", "0"];
    args.extend_from_slice(&session);
    let out = paho(addr, "subscribe", &args).await;
    assert_eq!(out, vec!["connected session_present=0", "subscribed granted=1", "disconnected"]);

    let (mut publisher, _) = TestClient::connect(addr, "publisher", true).await;
    for i in 1..=5 {
        publisher.publish(&format!("away/{i}"), format!("queued {i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }
    let mut args = vec!["--no-subscribe", "--count", "5"];
    args.extend_from_slice(&session);
    let out = paho(addr, "subscribe", &args).await;
    let mut expected = vec!["connected session_present=1".to_string()];
    expected.extend((1..=5).map(|i| format!("message topic=away/{i} qos=1 retain=0 payload=queued {i}")));
    expected.push("disconnected".to_string());
    assert_eq!(out, expected);

    // paho acknowledged all five: the session holds nothing more, but still the subscription.
    let (mut again, present) = TestClient::connect(addr, "paho-fixed", false).await;
    assert!(present, "session present [MQTT-3.2.2-2]");
    assert_nothing_before_marker(&mut publisher, &mut again, "away/marker").await;
    broker.stop();
}
