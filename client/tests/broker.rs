//! The client end to end against this project's broker, started in-process on a free port.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use amqtt_client::{
    ClientConfig, ClientError, ConnectReturnCode, MqttClient, QoS, SubscribeReturnCode, TopicConfig, WillConfig,
};
use bytes::Bytes;
use common::*;

/// [MQTT-3.3.1-1]..[MQTT-4.3.3-1] QoS 0, 1 and 2 messages go through and arrive with the QoS
/// they were published with (the subscription grants QoS 2); `publish` returns the message sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_receive_each_qos() {
    let broker = start_broker();
    let url = url_of(&broker);
    let subscriber = connected(&url, "qos-sub", test_config()).await;
    let codes = subscriber.subscribe(&[("qos/#", QoS::ExactlyOnce)]).await.expect("subscribe");
    assert_eq!(codes, vec![SubscribeReturnCode::Success(QoS::ExactlyOnce)]);
    let publisher = connected(&url, "qos-pub", test_config()).await;
    for qos in QOS_ALL {
        let topic = format!("qos/{}", qos as u8);
        let sent = publisher.publish(&topic, format!("payload {qos}"), Some(qos), Some(false)).await.expect("publish");
        assert_eq!((sent.topic.as_str(), sent.qos, sent.retain), (topic.as_str(), qos, false));
        let received = next_message(&subscriber).await;
        assert_eq!(received.topic, topic);
        assert_eq!(received.payload, Bytes::from(format!("payload {qos}")));
        assert_eq!((received.qos, received.retain, received.dup), (qos, false, false));
    }
    publisher.disconnect().await.expect("disconnect");
    subscriber.disconnect().await.expect("disconnect");
}

/// [MQTT-3.8.4-6] a subscription granted QoS 1 gets a QoS 2 message downgraded to QoS 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_qos_is_the_lower_of_publish_and_subscription() {
    let broker = start_broker();
    let url = url_of(&broker);
    let subscriber = connected(&url, "down-sub", test_config()).await;
    subscriber.subscribe(&[("down", QoS::AtLeastOnce)]).await.expect("subscribe");
    let publisher = connected(&url, "down-pub", test_config()).await;
    publisher.publish("down", "x", Some(QoS::ExactlyOnce), None).await.expect("publish");
    assert_eq!(next_message(&subscriber).await.qos, QoS::AtLeastOnce);
}

/// [MQTT-3.3.1-6] a retained message is delivered to a later subscriber with RETAIN set, and
/// [MQTT-3.3.1-10] an empty retained message clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages() {
    let broker = start_broker();
    let url = url_of(&broker);
    let publisher = connected(&url, "ret-pub", test_config()).await;
    publisher.publish("ret/a", "kept", Some(QoS::AtLeastOnce), Some(true)).await.expect("publish");
    let subscriber = connected(&url, "ret-sub", test_config()).await;
    subscriber.subscribe(&[("ret/#", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)]).await.expect("subscribe");
    let message = next_message(&subscriber).await;
    assert_eq!((message.topic.as_str(), &message.payload[..], message.retain), ("ret/a", &b"kept"[..], true));

    publisher.publish("ret/a", Bytes::new(), Some(QoS::AtLeastOnce), Some(true)).await.expect("clear");
    let _live = next_message(&subscriber).await; // the empty message itself, to the existing subscriber
    let late = connected(&url, "ret-late", test_config()).await;
    late.subscribe(&[("ret/#", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)]).await.expect("subscribe");
    assert_nothing_before_marker(&publisher, &late, "marker").await;
}

/// `topics` in the config give publish its QoS and retain flag when the call does not, and an
/// explicit argument wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_topic_defaults_from_config() {
    let broker = start_broker();
    let url = url_of(&broker);
    let mut config = test_config();
    config.default_qos = QoS::AtLeastOnce;
    config.topics.insert("cfg/special".into(), TopicConfig { qos: Some(QoS::ExactlyOnce), retain: Some(true) });
    let publisher = connected(&url, "cfg-pub", config).await;
    let sent = publisher.publish("cfg/special", "a", None, None).await.expect("publish");
    assert_eq!((sent.qos, sent.retain), (QoS::ExactlyOnce, true));
    let sent = publisher.publish("cfg/special", "b", Some(QoS::AtMostOnce), Some(false)).await.expect("publish");
    assert_eq!((sent.qos, sent.retain), (QoS::AtMostOnce, false));
    let sent = publisher.publish("cfg/other", "c", None, None).await.expect("publish");
    assert_eq!((sent.qos, sent.retain), (QoS::AtLeastOnce, false));
    // The retained one really went out retained and with QoS 2.
    let subscriber = connected(&url, "cfg-sub", test_config()).await;
    subscriber.subscribe(&[("cfg/special", QoS::ExactlyOnce)]).await.expect("subscribe");
    let message = next_message(&subscriber).await;
    assert_eq!((&message.payload[..], message.qos, message.retain), (&b"a"[..], QoS::ExactlyOnce, true));
}

/// A client YAML file drives the client: `connection.uri` is used by `connect("")` and the will
/// from the file is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_drives_connect_and_will() {
    let broker = start_broker();
    let url = url_of(&broker);
    let path = std::env::temp_dir().join(format!("amqtt-client-test-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        format!("connection:\n  uri: {url}\nwill:\n  topic: yaml/will\n  message: from yaml\n  qos: 1\n"),
    )
    .expect("write config");
    let config = ClientConfig::load(&path).expect("config loads");
    std::fs::remove_file(&path).expect("remove config");

    let watcher = connected(&url, "yaml-watch", test_config()).await;
    watcher.subscribe(&[("yaml/will", QoS::AtLeastOnce)]).await.expect("subscribe");
    let client = MqttClient::new(Some("yaml-client"), config);
    assert!(!client.connect("").await.expect("connect with connection.uri"));
    client.abort_connection_for_test().await;
    let will = next_message(&watcher).await;
    assert_eq!((will.topic.as_str(), &will.payload[..], will.qos), ("yaml/will", &b"from yaml"[..], QoS::AtLeastOnce));
}

/// [MQTT-3.1.2-8] the will is published when the client goes away without DISCONNECT, and
/// [MQTT-3.1.2-10] not after a DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_abnormal_close_only() {
    let broker = start_broker();
    let url = url_of(&broker);
    let watcher = connected(&url, "will-watch", test_config()).await;
    watcher.subscribe(&[("will/#", QoS::AtLeastOnce)]).await.expect("subscribe");
    let with_will = |topic: &str| ClientConfig {
        will: Some(WillConfig {
            topic: topic.into(),
            message: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
        ..test_config()
    };

    let polite = connected(&url, "will-polite", with_will("will/polite")).await;
    polite.disconnect().await.expect("disconnect");
    let crashing = connected(&url, "will-crash", with_will("will/crash")).await;
    crashing.abort_connection_for_test().await;
    let will = next_message(&watcher).await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("will/crash", &b"gone"[..]));
    // The polite client's will, had it been published, would have come before.
    assert_nothing_before_marker(&watcher, &watcher, "will/marker").await;
}

/// [MQTT-3.1.2-4] [MQTT-3.2.2-2] with clean session 0 the subscription and the QoS 1/2
/// messages published while the client was away survive a disconnect; the next connect reports
/// the session present and `deliver_message` returns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_resumes() {
    let broker = start_broker();
    let url = url_of(&broker);
    let config = ClientConfig { cleansession: false, ..test_config() };
    let subscriber = MqttClient::new(Some("persist-sub"), config);
    assert!(!subscriber.connect(&url).await.expect("connect"), "no session on a fresh broker");
    subscriber.subscribe(&[("persist/#", QoS::ExactlyOnce)]).await.expect("subscribe");
    subscriber.disconnect().await.expect("disconnect");
    assert!(matches!(subscriber.deliver_message(None).await, Err(ClientError::NotConnected)));

    let publisher = connected(&url, "persist-pub", test_config()).await;
    publisher.publish("persist/1", "while away 1", Some(QoS::AtLeastOnce), None).await.expect("publish");
    publisher.publish("persist/2", "while away 2", Some(QoS::ExactlyOnce), None).await.expect("publish");

    assert!(subscriber.connect(&url).await.expect("reconnect"), "the broker must have kept the session");
    let first = next_message(&subscriber).await;
    let second = next_message(&subscriber).await;
    assert_eq!((first.topic.as_str(), &first.payload[..]), ("persist/1", &b"while away 1"[..]));
    assert_eq!((second.topic.as_str(), second.qos), ("persist/2", QoS::ExactlyOnce));
    // The subscription itself survived: live messages still arrive.
    publisher.publish("persist/3", "live", Some(QoS::AtLeastOnce), None).await.expect("publish");
    assert_eq!(next_message(&subscriber).await.topic, "persist/3");
}

/// 1 000 QoS 1 publishes in flight at once from clones of one client (beyond the in-flight
/// window they wait their turn) all complete, and all arrive [MQTT-4.3.2-1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_qos1_publishes() {
    const N: usize = 1000;
    let broker = start_broker();
    let url = url_of(&broker);
    let subscriber = connected(&url, "many-sub", test_config()).await;
    subscriber.subscribe(&[("many", QoS::AtLeastOnce)]).await.expect("subscribe");
    let receiving = {
        let subscriber = subscriber.clone();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while seen.len() < N {
                let message = next_message(&subscriber).await;
                let n: usize = std::str::from_utf8(&message.payload).expect("utf8").parse().expect("number");
                assert!(seen.insert(n), "message {n} delivered twice");
            }
            seen
        })
    };
    let publisher = connected(&url, "many-pub", test_config()).await;
    let publishes: Vec<_> = (0..N)
        .map(|i| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish("many", i.to_string(), Some(QoS::AtLeastOnce), None).await })
        })
        .collect();
    for (i, result) in futures_util::future::join_all(publishes).await.into_iter().enumerate() {
        let message = result.expect("task").unwrap_or_else(|error| panic!("publish {i} failed: {error}"));
        assert_eq!(message.payload, Bytes::from(i.to_string()));
    }
    let seen = tokio::time::timeout(WAIT, receiving).await.expect("all delivered in time").expect("receiver");
    assert_eq!(seen, (0..N).collect());
}

/// [MQTT-3.2.2-5] a refused connection reports the CONNACK return code in words and is not
/// retried (the same CONNECT would be refused again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_reports_not_authorized() {
    let broker = start_broker_with("auth:\n  allow-anonymous: false\n");
    let client = MqttClient::new(Some("refused"), ClientConfig { reconnect_retries: 3, ..ClientConfig::default() });
    let started = Instant::now();
    match client.connect(&url_of(&broker)).await {
        Err(error @ ClientError::Refused(ConnectReturnCode::NotAuthorized)) => {
            assert_eq!(error.to_string(), "connection refused: not authorized")
        }
        other => panic!("expected Refused(NotAuthorized), got {other:?}"),
    }
    // A retry would come after a back-off of at least 1 s.
    assert!(started.elapsed() < Duration::from_secs(1), "a refusal must not be retried");
    assert!(matches!(client.publish("a", "x", None, None).await, Err(ClientError::NotConnected)));
}

/// An unreachable broker is reported after the configured retries, with exponential back-off
/// (1 s, then 2 s: the second wait is capped here by `reconnect_max_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_after_retries() {
    let addr = unused_addr().await;
    let url = format!("mqtt://{addr}");
    let config = ClientConfig { reconnect_retries: 2, reconnect_max_interval: 1, ..ClientConfig::default() };
    let client = MqttClient::new(Some("unreachable"), config);
    let started = Instant::now();
    match client.connect(&url).await {
        Err(error @ ClientError::Unreachable { attempts: 3, .. }) => {
            let text = error.to_string();
            assert!(text.starts_with(&format!("cannot reach {url} after 3 attempts: ")), "{text}");
        }
        other => panic!("expected Unreachable after 3 attempts, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "two 1 s waits between the three attempts");

    let once =
        MqttClient::new(Some("unreachable-once"), ClientConfig { auto_reconnect: false, ..ClientConfig::default() });
    assert!(matches!(once.connect(&url).await, Err(ClientError::Unreachable { attempts: 1, .. })));
}

/// [MQTT-3.10.4-6] after UNSUBACK nothing more arrives for the filter; other subscriptions
/// stay. `deliver_message` with a timeout gives up with `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_deliver_timeout() {
    let broker = start_broker();
    let url = url_of(&broker);
    let client = connected(&url, "unsub", test_config()).await;
    client.subscribe(&[("u/#", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)]).await.expect("subscribe");
    assert!(matches!(client.deliver_message(Some(Duration::from_millis(50))).await, Err(ClientError::Timeout)));
    client.unsubscribe(&["u/#"]).await.expect("unsubscribe");
    client.publish("u/x", "not for me", Some(QoS::AtLeastOnce), None).await.expect("publish");
    assert_nothing_before_marker(&client, &client, "marker").await;
}

/// Credentials from the URL (percent-encoded) or the config reach the broker's password check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_url() {
    let auth = password_auth(&[&format!("us@er:{HASH_OF_P_COLON_SS}"), &format!("cfg-user:{HASH_OF_CFG_PASS}")]);
    let broker = start_broker_with(&auth);
    let addr = broker.listeners()[0].addr;
    let client = MqttClient::new(Some("creds"), test_config());
    client.connect(&format!("mqtt://us%40er:p%3Ass@{addr}")).await.expect("a named user is let in");
    client.disconnect().await.expect("disconnect");
    let config = ClientConfig { username: Some("cfg-user".into()), password: Some("cfg-pass".into()), ..test_config() };
    let from_config = MqttClient::new(Some("creds-cfg"), config);
    from_config.connect(&format!("mqtt://{addr}")).await.expect("credentials from the config");
}

/// After a lost connection (dropped under the client) the client reconnects by itself, subscribes
/// again (clean session: the broker has nothing) and delivers what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_dropped_connection() {
    let broker = start_broker();
    let url = url_of(&broker);
    let subscriber = connected(&url, "drop-sub", test_config()).await;
    subscriber.subscribe(&[("drop/#", QoS::AtLeastOnce)]).await.expect("subscribe");
    subscriber.drop_connection_for_test().await;
    // Runs on the new connection, after the client's own re-subscription: once its SUBACK is
    // back, so is the re-subscription's.
    subscriber.subscribe(&[("other", QoS::AtMostOnce)]).await.expect("subscribe after reconnecting");
    assert!(subscriber.is_connected());
    let publisher = connected(&url, "drop-pub", test_config()).await;
    publisher.publish("drop/after", "still here", Some(QoS::AtLeastOnce), None).await.expect("publish");
    let message = next_message(&subscriber).await;
    assert_eq!((message.topic.as_str(), &message.payload[..]), ("drop/after", &b"still here"[..]));
}
