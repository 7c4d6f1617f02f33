//! The plugin against a fake broker that records what it publishes, on tokio's paused clock: a
//! tick comes as soon as the test waits for it, and "nothing more" is an hour of virtual time
//! with nothing published.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqtt_plugin_api::{registrations, BrokerStats, Instance, Kind, PluginContext, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::process::ProcessSample;

#[derive(Debug, Clone, PartialEq)]
struct Published {
    topic: String,
    payload: String,
    qos: u8,
    retain: bool,
}

struct FakeBroker {
    published: mpsc::UnboundedSender<Published>,
}

/// Every figure distinct, so a figure published under the wrong topic shows. report.rs's
/// tests use it too.
pub(crate) const STATS: BrokerStats = BrokerStats {
    started_at: UNIX_EPOCH,
    bytes_received: 1001,
    bytes_sent: 2002,
    packets_received: 31,
    packets_sent: 42,
    publish_received: 5,
    publish_sent: 6,
    clients_connected: 3,
    clients_disconnected: 2,
    clients_maximum: 7,
    clients_total: 5,
    inflight_in: 1,
    inflight_out: 4,
    inflight_stored: 8,
    retained_messages: 9,
    subscriptions: 11,
    messages_dropped: 12,
    packets_too_large: 13,
    connect_timeouts: 14,
    subscriptions_refused: 15,
    topics_too_long: 16,
    topic_levels_exceeded: 17,
};

impl BrokerHandle for FakeBroker {
    fn publish(&self, topic: &str, payload: Bytes, qos: u8, retain: bool) {
        let payload = String::from_utf8(payload.to_vec()).expect("$SYS payloads are text");
        let _ = self.published.send(Published { topic: topic.into(), payload, qos, retain });
    }

    fn stats(&self) -> BrokerStats {
        STATS
    }

    fn version(&self) -> String {
        "amqtt-rs 9.9.9".into()
    }
}

fn plugin(yaml: &str) -> SysTopics {
    let value: Value = yaml_serde::from_str(yaml).unwrap();
    let (settings, unknown) = amqtt_plugin_api::parse_settings(&value, &PluginContext::default()).unwrap();
    assert!(unknown.is_empty());
    SysTopics::new(settings, &PluginContext::default()).unwrap()
}

/// Starts `plugin` against a fake broker; returns what it publishes.
async fn start(plugin: &SysTopics) -> mpsc::UnboundedReceiver<Published> {
    let (published, received) = mpsc::unbounded_channel();
    let broker: Arc<dyn BrokerHandle> = Arc::new(FakeBroker { published });
    plugin.on_event(&Event::BrokerStarted { broker }).await;
    received
}

async fn next(received: &mut mpsc::UnboundedReceiver<Published>) -> Published {
    // Virtual time: this only bounds a test that is failing.
    tokio::time::timeout(Duration::from_secs(24 * 3600), received.recv())
        .await
        .expect("nothing published in a virtual day")
        .expect("the fake broker is gone")
}

async fn assert_silent(received: &mut mpsc::UnboundedReceiver<Published>) {
    if let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(3600), received.recv()).await {
        panic!("published after it should have stopped: {message:?}");
    }
}

async fn expect_version(received: &mut mpsc::UnboundedReceiver<Published>) {
    let version = next(received).await;
    assert_eq!(
        version,
        Published { topic: "$SYS/broker/version".into(), payload: "amqtt-rs 9.9.9".into(), qos: 2, retain: true }
    );
}

/// One tick's worth of messages, in order.
async fn tick(received: &mut mpsc::UnboundedReceiver<Published>) -> Vec<Published> {
    let mut messages = Vec::new();
    for _ in 0..report::report(&STATS, UNIX_EPOCH, &ProcessSample::default()).len() {
        messages.push(next(received).await);
    }
    messages
}

#[tokio::test(start_paused = true)]
async fn version_retained_at_start_then_every_topic_each_interval() {
    let plugin = plugin("sys_interval: 20");
    let started = Instant::now();
    let mut received = start(&plugin).await;
    expect_version(&mut received).await;

    let first = tick(&mut received).await;
    assert_eq!(started.elapsed(), Duration::from_secs(20), "the first tick comes one interval after the start");
    // What the plugin publishes is `report` of the broker's statistics (report.rs's tests check
    // each topic and payload) under `$SYS/broker/`: all of it but the clock and the process's
    // figures is the same here.
    let expected = report::report(&STATS, SystemTime::now(), &ProcessSample::default());
    let topics: Vec<&str> = first.iter().map(|m| m.topic.as_str()).collect();
    let expected_topics: Vec<String> = expected.iter().map(|(name, _)| format!("{}{name}", report::ROOT)).collect();
    assert_eq!(topics, expected_topics);
    const VARYING: [&str; 6] = ["time", "uptime", "heap/size", "heap/maximum", "cpu/percent", "cpu/maximum"];
    for (message, (name, payload)) in first.iter().zip(&expected) {
        assert!(!message.retain && message.qos == 2, "{message:?}");
        if !VARYING.contains(name) {
            assert_eq!(&message.payload, payload, "{name}");
        }
    }
    let payload = |name: &str| {
        let topic = format!("$SYS/broker/{name}");
        first.iter().find(|m| m.topic == topic).map(|m| m.payload.clone()).unwrap()
    };
    // Started at the epoch in the fake: uptime is the wall clock's time.
    let time: u64 = payload("time").parse().unwrap();
    let uptime: u64 = payload("uptime").parse().unwrap();
    assert!(time > 1_700_000_000 && uptime == time, "time {time}, uptime {uptime}");
    for name in ["heap/size", "heap/maximum", "cpu/percent", "cpu/maximum"] {
        let value = payload(name);
        assert!(value.parse::<f64>().is_ok() && value.split('.').nth(1).map(str::len) == Some(3), "{name}: {value}");
    }

    let second = tick(&mut received).await;
    assert_eq!(started.elapsed(), Duration::from_secs(40));
    assert_eq!(second.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(), topics);
}

#[tokio::test(start_paused = true)]
async fn interval_zero_publishes_only_the_version() {
    let plugin = plugin("sys_interval: 0");
    let mut received = start(&plugin).await;
    expect_version(&mut received).await;
    assert_silent(&mut received).await;
}

#[tokio::test(start_paused = true)]
async fn stops_when_the_broker_stops() {
    let plugin = plugin("sys-interval: 1");
    let mut received = start(&plugin).await;
    expect_version(&mut received).await;
    tick(&mut received).await;
    plugin.on_event(&Event::BrokerStopping).await;
    assert_silent(&mut received).await;
}

#[tokio::test(start_paused = true)]
async fn stops_when_dropped() {
    let plugin = plugin("sys_interval: 1");
    let mut received = start(&plugin).await;
    expect_version(&mut received).await;
    tick(&mut received).await;
    drop(plugin);
    assert_silent(&mut received).await;
}

#[tokio::test(start_paused = true)]
async fn other_events_change_nothing() {
    let plugin = plugin("sys_interval: 5");
    assert_eq!(plugin.interests(), Interests::NONE);
    let mut received = start(&plugin).await;
    expect_version(&mut received).await;
    plugin.on_event(&Event::RetainedCleared { topic: "a".into() }).await;
    let started = Instant::now();
    tick(&mut received).await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[test]
fn registered_under_amqtt_names() {
    let registration = registrations().find(|r| r.name == "broker_sys").expect("broker_sys is registered");
    assert_eq!(registration.kind, Kind::Event);
    for name in ["sys_topics", "amqtt.plugins.sys.broker.BrokerSysPlugin"] {
        assert!(registration.answers_to(name), "{name}");
    }
    let value: Value = yaml_serde::from_str("sys_interval: 3\nunknown: 1").unwrap();
    let built = (registration.build)(&value, &PluginContext::default()).unwrap();
    assert!(matches!(built.instance, Instance::Event(_)));
    assert_eq!(built.unknown_keys, ["unknown"]);
}

#[test]
fn default_interval_is_twenty_seconds() {
    assert_eq!(plugin("{}").interval(), Some(Duration::from_secs(20)));
}
