//! Persistence (`persistence:` in the config): what survives a restart of the broker.

use amqtt_tests::*;

/// A broker keeping its state in `dir`, with `sync` (`always` or `periodic`).
fn persistent_broker(dir: &std::path::Path, sync: &str) -> RunningBroker {
    start_broker_with(&format!(
        "persistence:\n  enabled: true\n  path: {}\n  sync: {sync}\nplugins: [auth_anonymous]\n",
        dir.join("state.redb").display()
    ))
}

/// A retained message, and its clearing, survive a graceful restart [MQTT-3.3.1-5]; a message
/// retained with QoS 1 comes back at QoS 1.
#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for sync in ["always", "periodic"] {
        let broker = persistent_broker(dir.path(), sync);
        let (mut publisher, _) = TestClient::connect(addr(&broker), "retainer", true).await;
        publisher.publish(&format!("kept/{sync}"), b"on", QoS::AtLeastOnce, true).await;
        publisher.publish(&format!("gone/{sync}"), b"x", QoS::AtLeastOnce, true).await;
        publisher.publish(&format!("gone/{sync}"), b"", QoS::AtLeastOnce, true).await;
        broker.stop();

        let broker = persistent_broker(dir.path(), sync);
        assert_eq!(broker.stats().retained_messages, if sync == "always" { 1 } else { 2 });
        let (mut subscriber, _) = TestClient::connect(addr(&broker), "later", true).await;
        subscriber
            .subscribe(&[(&format!("kept/{sync}"), QoS::ExactlyOnce), (&format!("gone/{sync}"), QoS::AtLeastOnce)])
            .await;
        let kept = subscriber.recv_publish().await;
        assert_eq!(
            (topic(&kept), text(&kept), kept.qos, kept.retain),
            (format!("kept/{sync}").as_str(), "on", QoS::AtLeastOnce, true)
        );
        subscriber.ack(&kept).await;
        let (mut publisher, _) = TestClient::connect(addr(&broker), "marker", true).await;
        assert_nothing_before_marker(&mut publisher, &mut subscriber, &format!("gone/{sync}")).await;
        broker.stop();
    }
}

/// A persistent session's subscriptions, and the QoS 1 and 2 messages published while its
/// client was away, survive a graceful restart: the client comes back to session present 1
/// [MQTT-3.2.2-2] and gets them, in order [MQTT-4.6.0-6], at their QoS [MQTT-3.1.2-5].
#[tokio::test]
async fn offline_messages_of_a_persistent_session_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = persistent_broker(dir.path(), "always");
    let (mut subscriber, _) = TestClient::connect(addr(&broker), "away", false).await;
    subscriber.subscribe(&[("news/#", QoS::ExactlyOnce)]).await;
    subscriber.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "newsroom", true).await;
    for i in 0..10u32 {
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
        publisher.publish("news/today", i.to_string().as_bytes(), qos, false).await;
    }
    broker.stop();

    let broker = persistent_broker(dir.path(), "always");
    let (mut subscriber, present) = TestClient::connect(addr(&broker), "away", false).await;
    assert!(present, "the session was restored");
    // All ten fit in the in-flight window: they come at once, then are acknowledged.
    let mut received = Vec::new();
    for i in 0..10u32 {
        let message = subscriber.recv_publish().await;
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
        assert_eq!((text(&message), message.qos), (i.to_string().as_str(), qos));
        received.push(message);
    }
    for message in &received {
        subscriber.ack(message).await;
    }
    // The subscription itself came back too.
    let (mut publisher, _) = TestClient::connect(addr(&broker), "newsroom", true).await;
    round_trip(&mut publisher, &mut subscriber, "news/later", b"live").await;
    subscriber.disconnect().await;
    broker.stop();

    // Acknowledged messages are gone from the store: nothing comes again.
    let broker = persistent_broker(dir.path(), "always");
    let (mut subscriber, present) = TestClient::connect(addr(&broker), "away", false).await;
    assert!(present);
    let (mut publisher, _) = TestClient::connect(addr(&broker), "newsroom", true).await;
    assert_nothing_before_marker(&mut publisher, &mut subscriber, "news/marker").await;
    broker.stop();
}
