//! The `broker_sys` plugin over real sockets: `$SYS/broker/version` retained at start, the
//! statistics every `sys_interval` seconds, counts that stay exact through reconnections,
//! takeovers and dropped connections, and no `$SYS` topic for wildcard subscriptions
//! [MQTT-4.7.2-1].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use amqtt_tests::*;

/// Every topic of one tick, in the order the plugin publishes them.
const TICK: [&str; 29] = [
    "load/bytes/received",
    "load/bytes/sent",
    "messages/received",
    "messages/sent",
    "time",
    "uptime",
    "uptime/formatted",
    "clients/connected",
    "clients/disconnected",
    "clients/maximum",
    "clients/total",
    "messages/inflight",
    "messages/inflight/in",
    "messages/inflight/out",
    "messages/inflight/stored",
    "messages/publish/received",
    "messages/publish/sent",
    "messages/retained/count",
    "messages/subscriptions/count",
    "heap/size",
    "heap/maximum",
    "cpu/percent",
    "cpu/maximum",
    "publish/messages/dropped",
    "limits/packet-size/exceeded",
    "limits/connect-timeout/exceeded",
    "limits/subscriptions/exceeded",
    "limits/topic-length/exceeded",
    "limits/topic-levels/exceeded",
];

/// Statistics every second.
fn start() -> RunningBroker {
    start_broker_with("sys_interval: 1\n")
}

/// A client subscribed to `$SYS/broker/#` (plus `extra` filters), which has received the
/// retained version.
async fn sys_subscriber(addr: std::net::SocketAddr, client_id: &str, extra: &[&str]) -> TestClient {
    let mut filters = vec![("$SYS/broker/#", QoS::AtMostOnce)];
    filters.extend(extra.iter().map(|filter| (*filter, QoS::AtMostOnce)));
    let mut client = subscriber(addr, client_id, &filters).await;
    let version = client.recv_publish().await;
    assert_eq!(topic(&version), "$SYS/broker/version");
    assert!(version.retain, "the version is retained");
    assert!(text(&version).starts_with("amqtt-rs "), "{:?}", text(&version));
    client
}

/// The next whole tick (from its first topic to its last), by topic relative to `$SYS/broker/`.
async fn next_tick(client: &mut TestClient) -> HashMap<String, String> {
    loop {
        let first = client.recv_publish().await;
        if topic(&first) != "$SYS/broker/load/bytes/received" {
            continue;
        }
        let mut tick = vec![first];
        for _ in 1..TICK.len() {
            tick.push(client.recv_publish().await);
        }
        let names: Vec<&str> = tick.iter().map(|m| topic(m).strip_prefix("$SYS/broker/").unwrap_or(topic(m))).collect();
        assert_eq!(names, TICK, "one tick, in order");
        assert!(tick.iter().all(|m| !m.retain), "the statistics are not retained (as in aMQTT)");
        return names.iter().zip(&tick).map(|(name, m)| (name.to_string(), text(m).to_string())).collect();
    }
}

fn count(tick: &HashMap<String, String>, name: &str) -> u64 {
    tick[name].parse().unwrap_or_else(|_| panic!("{name}: {:?} is not a count", tick[name]))
}

/// Reads ticks until `done` holds for one (at most 15 ticks: the counts must get there).
async fn await_tick(
    client: &mut TestClient,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let mut last = HashMap::new();
    for _ in 0..15 {
        last = next_tick(client).await;
        if done(&last) {
            return last;
        }
    }
    panic!("the statistics never reached the expected values; last tick: {last:?}");
}

#[tokio::test]
async fn version_at_start_then_every_statistic_each_interval() {
    let broker = start();
    let started = Instant::now();
    let mut sys = sys_subscriber(addr(&broker), "sys", &[]).await;
    let tick = next_tick(&mut sys).await;
    assert!(started.elapsed() < Duration::from_secs(4), "a whole tick within ~2 s, got {:?}", started.elapsed());

    for name in TICK {
        let value = &tick[name];
        match name {
            "uptime/formatted" => {
                // Python's str() of a UTC datetime, e.g. `2025-01-01 00:00:00+00:00`.
                assert!(value.len() == 25 && value.ends_with("+00:00") && value.as_bytes()[10] == b' ', "{value}");
            }
            "heap/size" | "heap/maximum" | "cpu/percent" | "cpu/maximum" => {
                let decimals = value.split_once('.').map(|(_, d)| d.len());
                assert!(value.parse::<f64>().is_ok() && decimals == Some(3), "{name}: {value}");
            }
            _ => {
                count(&tick, name);
            }
        }
    }
    assert_eq!(count(&tick, "clients/connected"), 1, "the subscriber itself");
    assert_eq!(count(&tick, "messages/subscriptions/count"), 1);
    assert_eq!(count(&tick, "messages/retained/count"), 1, "the version");
    assert!(count(&tick, "messages/received") >= 2, "CONNECT and SUBSCRIBE at least");
    assert!(count(&tick, "load/bytes/received") > count(&tick, "messages/received"));
    assert!(count(&tick, "messages/publish/sent") >= 1, "the retained version at least");
    let uptime = count(&tick, "uptime");
    assert!((1..10).contains(&uptime), "uptime {uptime}");
    let later = next_tick(&mut sys).await;
    assert!(count(&later, "messages/sent") > count(&tick, "messages/sent"), "the tick itself was sent");
}

#[tokio::test]
async fn counts_are_exact_after_connections_takeovers_and_dropped_sockets() {
    let broker = start();
    let addr = addr(&broker);
    let mut sys = sys_subscriber(addr, "sys", &[]).await;

    let mut staying = Vec::new();
    for i in 0..5 {
        staying.push(TestClient::connect(addr, &format!("stay-{i}"), true).await.0);
    }
    let tick = await_tick(&mut sys, |t| t["clients/connected"] == "6").await;
    assert_eq!((count(&tick, "clients/disconnected"), count(&tick, "clients/total")), (0, 6));
    assert!(count(&tick, "clients/maximum") >= 6);

    // The same client id, 50 times at once, persistent and clean sessions mixed: each connection
    // takes over the previous one (some lose before their CONNACK).
    let storm: Vec<_> =
        (0..50).map(|i| tokio::spawn(LenientClient::try_connect(addr, connect_packet("storm", i % 2 == 0)))).collect();
    let mut survivors = Vec::new();
    for connection in storm {
        survivors.push(connection.await.unwrap());
    }
    // Every one of them goes away without DISCONNECT.
    drop(survivors);
    // Clean sessions that drop their socket: nothing is left of them.
    for i in 0..10 {
        drop(TestClient::connect(addr, &format!("gone-{i}"), true).await);
    }
    // Persistent sessions that drop their socket: kept, with their subscription, for their
    // client's return.
    for i in 0..3 {
        let (mut away, _) = TestClient::connect(addr, &format!("away-{i}"), false).await;
        let filter = format!("away/{i}");
        away.subscribe(&[(filter.as_str(), QoS::AtLeastOnce)]).await;
        drop(away);
    }
    // A takeover of a connected client: the new connection replaces the old one.
    staying[0] = TestClient::connect(addr, "stay-0", true).await.0;
    // The storm's client id ends as a persistent session whose client went away.
    drop(TestClient::connect(addr, "storm", false).await);
    // Two messages for a persistent session whose client is away: stored for it.
    let (mut publisher, _) = TestClient::connect(addr, "publisher", true).await;
    for payload in [b"one", b"two"] {
        publisher.publish("away/0", payload, QoS::AtLeastOnce, false).await;
    }
    publisher.disconnect().await;

    // sys + 5 staying; 3 away + storm; subscriptions: sys's and the 3 away ones.
    let expected = |t: &HashMap<String, String>| {
        t["clients/connected"] == "6" && t["clients/disconnected"] == "4" && t["clients/total"] == "10"
    };
    let settled = await_tick(&mut sys, expected).await;
    // Still exact a tick later: nothing drifts.
    let tick = next_tick(&mut sys).await;
    assert!(expected(&tick), "{tick:?}");
    assert_eq!(count(&tick, "messages/subscriptions/count"), 4);
    assert!(count(&tick, "clients/maximum") >= 6);
    // The two messages wait in the away session: queued, or sent before its socket was seen
    // closed and unacknowledged; plus the retained version among the stored ones.
    assert_eq!(count(&tick, "messages/inflight/out") + count(&tick, "messages/inflight/stored"), 2 + 1);
    assert_eq!(count(&tick, "messages/inflight/in"), 0);
    assert_eq!(count(&tick, "messages/retained/count"), 1);
    assert!(count(&tick, "messages/publish/received") >= 2);
    assert_eq!(settled["messages/subscriptions/count"], tick["messages/subscriptions/count"]);
    let stats = broker.stats();
    assert_eq!((stats.clients_connected, stats.clients_disconnected), (6, 4));

    // Coming back resumes the session: one more connected, one less disconnected.
    let (mut back, session_present) = TestClient::connect(addr, "away-0", false).await;
    assert!(session_present);
    back.collect(2).await;
    let tick = await_tick(&mut sys, |t| t["clients/connected"] == "7").await;
    assert_eq!((count(&tick, "clients/disconnected"), count(&tick, "clients/total")), (3, 10));
    drop(staying);
}

#[tokio::test]
async fn wildcard_subscriptions_get_no_sys_topics() {
    let broker = start();
    let addr = addr(&broker);
    // In place before the version is matched for new subscriptions and before the ticks below.
    let mut all = subscriber(addr, "all", &[("#", QoS::AtMostOnce), ("+/broker/#", QoS::AtMostOnce)]).await;
    let mut sys = sys_subscriber(addr, "sys", &[]).await;
    next_tick(&mut sys).await;
    let (mut publisher, _) = TestClient::connect(addr, "publisher", true).await;
    // [MQTT-4.7.2-1]: neither the retained version nor a tick reached `all`.
    assert_nothing_before_marker(&mut publisher, &mut all, "marker").await;
}

#[tokio::test]
async fn interval_zero_publishes_only_the_version() {
    let ticking = start();
    let silent = start_broker_with("sys_interval: 0\n");
    let mut quiet = sys_subscriber(addr(&silent), "sys", &["marker"]).await;
    // The ticking broker is the clock: two whole ticks after the subscription, the silent one
    // would have ticked too had it the same interval.
    let mut sys = sys_subscriber(addr(&ticking), "sys", &[]).await;
    next_tick(&mut sys).await;
    next_tick(&mut sys).await;
    let (mut publisher, _) = TestClient::connect(addr(&silent), "publisher", true).await;
    assert_nothing_before_marker(&mut publisher, &mut quiet, "marker").await;
}

/// Encoded size of `packet`.
fn size(packet: impl Into<Packet>) -> u64 {
    let mut buf = bytes::BytesMut::new();
    packet.into().write(&mut buf).expect("test packets encode");
    buf.len() as u64
}

/// The counters behind the statistics, to the byte: every packet each way, PUBLISH packets
/// among them, and the in-flight gauges while a flow is open and once it is complete.
#[tokio::test]
async fn traffic_counters_and_gauges_are_exact() {
    let broker = start_broker();
    let addr = addr(&broker);
    let (mut sub, _) = TestClient::connect(addr, "sub", true).await;
    sub.subscribe(&[("t", QoS::AtLeastOnce)]).await;
    assert_eq!(broker.stats().subscriptions, 1);
    let (mut publisher, _) = TestClient::connect(addr, "pub", true).await;
    publisher.publish("t", b"hello", QoS::AtLeastOnce, false).await;
    let delivered = sub.recv_publish().await;
    assert_eq!(broker.stats().inflight_out, 1, "sent, not acknowledged yet");
    sub.ack(&delivered).await;
    sub.ping().await;
    assert_eq!(broker.stats().inflight_out, 0);

    // A QoS 2 flow left open after PUBREC: one message in flight in.
    publisher.send(publish_packet("q2", b"x", QoS::ExactlyOnce, false, 7)).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    assert_eq!(broker.stats().inflight_in, 1);
    publisher.send(PubRel { pkid: 7 }).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(PubComp { pkid: 7 }));
    assert_eq!(broker.stats().inflight_in, 0);

    sub.unsubscribe(&["t"]).await;
    assert_eq!(broker.stats().subscriptions, 0);
    sub.disconnect().await;
    publisher.disconnect().await;

    let connack = || ConnAck { session_present: false, code: ConnectReturnCode::Accepted };
    let subscribe =
        Subscribe { pkid: 1, filters: vec![SubscribeFilter { filter: ByteString::from("t"), qos: QoS::AtLeastOnce }] };
    let suback = SubAck { pkid: 1, return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)] };
    let received = [
        size(connect_packet("sub", true)),
        size(subscribe),
        size(connect_packet("pub", true)),
        size(publish_packet("t", b"hello", QoS::AtLeastOnce, false, 1)),
        size(PubAck { pkid: delivered.pkid }),
        size(Packet::PingReq),
        size(publish_packet("q2", b"x", QoS::ExactlyOnce, false, 7)),
        size(PubRel { pkid: 7 }),
        size(Unsubscribe { pkid: 2, filters: vec![ByteString::from("t")] }),
        size(Packet::Disconnect),
        size(Packet::Disconnect),
    ];
    let sent = [
        size(connack()),
        size(suback),
        size(connack()),
        size(PubAck { pkid: 1 }),
        size(delivered.clone()),
        size(Packet::PingResp),
        size(PubRec { pkid: 7 }),
        size(PubComp { pkid: 7 }),
        size(UnsubAck { pkid: 2 }),
    ];
    let stats = broker.stats();
    assert_eq!((stats.packets_received, stats.publish_received), (received.len() as u64, 2));
    assert_eq!((stats.packets_sent, stats.publish_sent), (sent.len() as u64, 1));
    assert_eq!((stats.bytes_received, stats.bytes_sent), (received.iter().sum(), sent.iter().sum()));
    assert_eq!((stats.inflight_in, stats.inflight_out, stats.queued), (0, 0, 0));
    assert_eq!((stats.clients_connected, stats.clients_maximum), (0, 2));
}
