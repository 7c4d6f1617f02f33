//! Auto-reconnect across a broker restart: aMQTT's issue #149 (a subscriber receives nothing
//! after a reconnection) must never happen here.

mod common;

use amqtt_client::{ClientConfig, MqttClient, QoS};
use common::*;

/// A subscriber keeps receiving across a broker restart on the same port: it notices the lost
/// connection, reconnects by itself, finds no session on the new broker (session present 0,
/// [MQTT-3.2.2-2]) and subscribes again, so `deliver_message` returns messages published after
/// the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_survives_broker_restart() {
    let first = start_broker();
    let addr = first.listeners()[0].addr;
    let url = url_of(&first);
    // Retry for ever: the test, not the retry budget, bounds the wait.
    let config = ClientConfig { reconnect_retries: -1, reconnect_max_interval: 1, ..ClientConfig::default() };
    let subscriber = MqttClient::new(Some("restart-sub"), config);
    subscriber.connect(&url).await.expect("connect");
    subscriber.subscribe(&[("restart/#", QoS::AtLeastOnce)]).await.expect("subscribe");
    let publisher = connected(&url, "restart-pub-1", test_config()).await;
    publisher.publish("restart/before", "before", Some(QoS::AtLeastOnce), None).await.expect("publish");
    assert_eq!(next_message(&subscriber).await.topic, "restart/before");
    publisher.disconnect().await.expect("disconnect");

    first.stop();
    // The broker sets SO_REUSEADDR, so the same port can be bound again at once.
    let second = start_broker_on(&addr.to_string(), "");
    assert_eq!(second.listeners()[0].addr, addr);

    // A retained message reaches the subscriber only through a subscription on the new broker,
    // whether it reconnects before or after the publish: receiving it proves the
    // re-subscription without waiting for an arbitrary time.
    let publisher = connected(&url, "restart-pub-2", test_config()).await;
    publisher.publish("restart/retained", "after restart", Some(QoS::AtLeastOnce), Some(true)).await.expect("publish");
    let message = next_message(&subscriber).await;
    assert_eq!((message.topic.as_str(), &message.payload[..]), ("restart/retained", &b"after restart"[..]));
    // And live messages flow again.
    publisher.publish("restart/live", "live", Some(QoS::AtLeastOnce), Some(false)).await.expect("publish");
    let message = next_message(&subscriber).await;
    assert_eq!((message.topic.as_str(), &message.payload[..], message.retain), ("restart/live", &b"live"[..], false));
    assert!(subscriber.is_connected());
    subscriber.disconnect().await.expect("disconnect");
}

/// A publish made while the broker is down waits for the reconnection and then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_during_outage_completes_after_reconnect() {
    let first = start_broker();
    let addr = first.listeners()[0].addr;
    let url = url_of(&first);
    let config = ClientConfig { reconnect_retries: -1, reconnect_max_interval: 1, ..ClientConfig::default() };
    let publisher = MqttClient::new(Some("outage-pub"), config);
    publisher.connect(&url).await.expect("connect");
    first.stop();

    let pending = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish("outage/t", "queued", Some(QoS::AtLeastOnce), Some(true)).await })
    };
    let second = start_broker_on(&addr.to_string(), "");
    let sent = tokio::time::timeout(WAIT, pending).await.expect("publish completes").expect("task").expect("publish");
    assert_eq!(&sent.payload[..], b"queued");
    let subscriber = connected(&url, "outage-sub", test_config()).await;
    subscriber.subscribe(&[("outage/t", QoS::AtLeastOnce)]).await.expect("subscribe");
    assert_eq!(&next_message(&subscriber).await.payload[..], b"queued");
    drop(second);
}
