//! The client against a real Mosquitto broker (Debian package `mosquitto`), started by each
//! test on a free port. Without Mosquitto the tests print "skipped" and pass, unless CI is set.

mod common;

use amqtt_client::{ClientConfig, MqttClient, QoS, SubscribeReturnCode};
use bytes::Bytes;
use common::*;

/// [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] QoS 0, 1 and 2 through Mosquitto, each
/// delivered with its QoS; `publish` completes once Mosquitto has acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_publish_and_receive_each_qos() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    let url = mosquitto.url();
    let subscriber = connected(&url, "mq-sub", test_config()).await;
    let codes = subscriber.subscribe(&[("mq/qos/#", QoS::ExactlyOnce)]).await.expect("subscribe");
    assert_eq!(codes, vec![SubscribeReturnCode::Success(QoS::ExactlyOnce)]);
    let publisher = connected(&url, "mq-pub", test_config()).await;
    for qos in QOS_ALL {
        let topic = format!("mq/qos/{}", qos as u8);
        publisher.publish(&topic, format!("via mosquitto {qos}"), Some(qos), Some(false)).await.expect("publish");
        let message = next_message(&subscriber).await;
        assert_eq!((message.topic.as_str(), message.qos, message.retain), (topic.as_str(), qos, false));
        assert_eq!(message.payload, Bytes::from(format!("via mosquitto {qos}")));
    }
    publisher.disconnect().await.expect("disconnect");
    subscriber.disconnect().await.expect("disconnect");
}

/// [MQTT-3.3.1-6] a retained message published through Mosquitto reaches a later subscriber
/// with RETAIN set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_retained() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    let url = mosquitto.url();
    let publisher = connected(&url, "mq-ret-pub", test_config()).await;
    publisher.publish("mq/ret", "kept", Some(QoS::AtLeastOnce), Some(true)).await.expect("publish");
    let subscriber = connected(&url, "mq-ret-sub", test_config()).await;
    subscriber.subscribe(&[("mq/ret", QoS::AtLeastOnce)]).await.expect("subscribe");
    let message = next_message(&subscriber).await;
    assert_eq!((message.topic.as_str(), &message.payload[..], message.retain), ("mq/ret", &b"kept"[..], true));
}

/// [MQTT-3.1.2-4] [MQTT-3.2.2-2] a persistent session on Mosquitto: messages published while
/// the client was away are delivered after it connects again, with session present reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_persistent_session() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    let url = mosquitto.url();
    let subscriber = MqttClient::new(Some("mq-persist"), ClientConfig { cleansession: false, ..test_config() });
    assert!(!subscriber.connect(&url).await.expect("connect"));
    subscriber.subscribe(&[("mq/persist", QoS::ExactlyOnce)]).await.expect("subscribe");
    subscriber.disconnect().await.expect("disconnect");

    let publisher = connected(&url, "mq-persist-pub", test_config()).await;
    publisher.publish("mq/persist", "one", Some(QoS::AtLeastOnce), None).await.expect("publish");
    publisher.publish("mq/persist", "two", Some(QoS::ExactlyOnce), None).await.expect("publish");

    assert!(subscriber.connect(&url).await.expect("reconnect"), "Mosquitto kept the session");
    assert_eq!(&next_message(&subscriber).await.payload[..], b"one");
    let second = next_message(&subscriber).await;
    assert_eq!((&second.payload[..], second.qos), (&b"two"[..], QoS::ExactlyOnce));
}

/// [MQTT-3.1.2-8] Mosquitto publishes the client's will when it goes away without DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_will() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    let url = mosquitto.url();
    let watcher = connected(&url, "mq-will-watch", test_config()).await;
    watcher.subscribe(&[("mq/will", QoS::AtLeastOnce)]).await.expect("subscribe");
    let config = ClientConfig {
        will: Some(amqtt_client::WillConfig {
            topic: "mq/will".into(),
            message: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
        ..test_config()
    };
    let client = connected(&url, "mq-will", config).await;
    client.abort_connection_for_test().await;
    assert_eq!(&next_message(&watcher).await.payload[..], b"gone");
}

/// 1 000 concurrent QoS 1 publishes through Mosquitto all complete and all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_thousand_concurrent_publishes() {
    const N: usize = 1000;
    let Some(mosquitto) = Mosquitto::start().await else { return };
    let url = mosquitto.url();
    let subscriber = connected(&url, "mq-many-sub", test_config()).await;
    subscriber.subscribe(&[("mq/many", QoS::AtLeastOnce)]).await.expect("subscribe");
    let publisher = connected(&url, "mq-many-pub", test_config()).await;
    let publishes: Vec<_> = (0..N)
        .map(|i| {
            let publisher = publisher.clone();
            async move { publisher.publish("mq/many", i.to_string(), Some(QoS::AtLeastOnce), None).await }
        })
        .collect();
    for result in futures_util::future::join_all(publishes).await {
        result.expect("publish");
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        let message = next_message(&subscriber).await;
        seen.insert(String::from_utf8(message.payload.to_vec()).expect("utf8").parse::<usize>().expect("number"));
    }
    assert_eq!(seen, (0..N).collect());
}
