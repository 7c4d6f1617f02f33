//! Persistent sessions (clean session 0): subscriptions, queued and in-flight messages outlive
//! the connection; clean session 1 throws them away [MQTT-3.1.2-4, MQTT-3.1.2-5, MQTT-3.1.2-6].

use amqtt_tests::*;

/// A CONNECT with a will on `will_topic`: the watcher subscribed to it learns, by receiving the
/// will, that the broker has noticed the connection is gone (instead of sleeping).
fn connect_with_will(client_id: &str, clean_session: bool, will_topic: &str) -> Connect {
    Connect {
        will: Some(last_will(will_topic, b"gone", QoS::AtLeastOnce, false)),
        ..connect_packet(client_id, clean_session)
    }
}

/// Waits for the will on `will_topic` and acknowledges it.
async fn await_will(watcher: &mut TestClient, will_topic: &str) {
    let will = watcher.recv_publish().await;
    assert_eq!(&*will.topic, will_topic, "expected the will, got {will:?}");
    watcher.ack(&will).await;
}

/// Disconnects `sub`, resumes its session `client_id` (session present 1) and proves nothing is
/// re-sent: the next message is a marker on `marker_topic`, which the session subscribes to.
async fn assert_resumption_resends_nothing(
    broker: &RunningBroker,
    sub: TestClient,
    client_id: &str,
    publisher: &mut TestClient,
    marker_topic: &str,
) {
    sub.disconnect().await;
    let (mut sub, present) = TestClient::connect(addr(broker), client_id, false).await;
    assert!(present);
    assert_nothing_before_marker(publisher, &mut sub, marker_topic).await;
    sub.disconnect().await;
}

/// [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] subscriptions survive a disconnect, and QoS 1 and
/// 2 messages published while the client is away are queued and delivered on its return without
/// a new SUBSCRIBE; QoS 0 messages are not kept for an offline session (optional in the spec,
/// our documented choice).
#[tokio::test]
async fn subscriptions_and_qos1_qos2_messages_survive_a_disconnect() {
    let broker = start_broker();
    let (mut sub, present) = TestClient::connect(addr(&broker), "persistent", false).await;
    assert!(!present, "no session yet [MQTT-3.2.2-3]");
    assert_eq!(sub.subscribe(&[("s/#", QoS::ExactlyOnce)]).await, vec![SubscribeReturnCode::Success(QoS::ExactlyOnce)]);
    sub.disconnect().await;

    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("s/1", b"away-q1", QoS::AtLeastOnce, false).await;
    publisher.publish("s/0", b"away-q0", QoS::AtMostOnce, false).await;
    publisher.publish("s/2", b"away-q2", QoS::ExactlyOnce, false).await;

    let (mut sub, present) = TestClient::connect(addr(&broker), "persistent", false).await;
    assert!(present, "session-present 1 for a resumed session [MQTT-3.2.2-2]");
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!((&*first.topic, text(&first), first.qos), ("s/1", "away-q1", QoS::AtLeastOnce));
    assert!(!first.dup, "first delivery of a queued message has DUP 0 [MQTT-3.3.1-3]");
    // The QoS 0 message published in between must not show up between the two.
    assert_eq!((&*second.topic, text(&second), second.qos), ("s/2", "away-q2", QoS::ExactlyOnce));
    sub.ack(&first).await;
    sub.ack(&second).await;
    // Nothing else (in particular not the QoS 0 message), and the subscription still routes.
    assert_nothing_before_marker(&mut publisher, &mut sub, "s/marker").await;
    sub.disconnect().await;
    publisher.disconnect().await;
    broker.stop();
}

/// [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-3.1.2-4] unacknowledged QoS 1 messages are re-sent on
/// reconnection with DUP 1, their original packet ids and order, before any message queued
/// while the client was away; acknowledging them ends their flow for good.
#[tokio::test]
async fn inflight_messages_are_resent_with_dup_before_queued_ones() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("gone/#", QoS::AtLeastOnce)]).await;
    let (mut sub, _) =
        TestClient::connect_accepted(addr(&broker), connect_with_will("inflight", false, "gone/inflight")).await;
    sub.subscribe(&[("f/#", QoS::AtLeastOnce)]).await;

    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for i in 0..3 {
        publisher.publish("f/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }
    let mut unacked = Vec::new();
    for i in 0..3 {
        let publish = sub.recv_publish().await;
        assert_eq!((text(&publish), publish.qos, publish.dup), (format!("m{i}").as_str(), QoS::AtLeastOnce, false));
        unacked.push(publish);
    }
    // The socket goes away without DISCONNECT and without acknowledging anything.
    drop(sub);
    await_will(&mut watcher, "gone/inflight").await;
    publisher.publish("f/t", b"queued", QoS::AtLeastOnce, false).await;

    let (mut sub, present) = TestClient::connect(addr(&broker), "inflight", false).await;
    assert!(present, "[MQTT-3.2.2-2]");
    for original in &unacked {
        let again = sub.recv_publish().await;
        assert!(again.dup, "re-delivery must have DUP 1 [MQTT-3.3.1-1]: {again:?}");
        assert_eq!((again.pkid, &again.payload, &again.topic), (original.pkid, &original.payload, &original.topic));
    }
    let queued = sub.recv_publish().await;
    assert_eq!((text(&queued), queued.dup), ("queued", false));
    assert!(unacked.iter().all(|p| p.pkid != queued.pkid), "packet id still in use [MQTT-2.3.1-2]");
    for publish in unacked.iter().chain([&queued]) {
        sub.ack(publish).await;
    }
    assert_nothing_before_marker(&mut publisher, &mut sub, "f/marker").await;

    // Acknowledged means done: another resumption re-sends nothing.
    assert_resumption_resends_nothing(&broker, sub, "inflight", &mut publisher, "f/marker").await;
    broker.stop();
}

/// [MQTT-4.4.0-1] [MQTT-4.3.3-1] a QoS 2 message whose PUBREC was received but whose PUBCOMP was
/// not: on reconnection the broker re-sends the PUBREL, not the PUBLISH.
#[tokio::test]
async fn qos2_pubrel_is_resent_not_the_publish() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "q2sub", false).await;
    sub.subscribe(&[("q2/#", QoS::ExactlyOnce)]).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("q2/t", b"exactly-once", QoS::ExactlyOnce, false).await;

    let publish = sub.recv_publish().await;
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    sub.send(PubRec { pkid: publish.pkid }).await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel { pkid: publish.pkid }));
    sub.disconnect().await; // without PUBCOMP

    let (mut sub, present) = TestClient::connect(addr(&broker), "q2sub", false).await;
    assert!(present);
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel { pkid: publish.pkid }), "PUBREL re-sent [MQTT-4.4.0-1]");
    sub.send(PubComp { pkid: publish.pkid }).await;
    // Not followed by the PUBLISH again.
    assert_nothing_before_marker(&mut publisher, &mut sub, "q2/marker").await;

    // PUBCOMP completed the flow: nothing is re-sent on the next resumption.
    assert_resumption_resends_nothing(&broker, sub, "q2sub", &mut publisher, "q2/marker").await;
    broker.stop();
}

/// [MQTT-4.3.3-2] [MQTT-3.1.2-4] the broker's record of an inbound QoS 2 message awaiting PUBREL
/// is session state: after a reconnection the publisher's re-sent PUBLISH (DUP 1, same packet
/// id) is answered with PUBREC but not delivered a second time; PUBREL then gets PUBCOMP and
/// frees the packet id.
#[tokio::test]
async fn inbound_qos2_state_survives_reconnection() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    sub.subscribe(&[("in/#", QoS::ExactlyOnce)]).await;

    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub7", false).await;
    publisher.send(publish_packet("in/t", b"once", QoS::ExactlyOnce, false, 7)).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    let delivered = sub.recv_publish().await;
    assert_eq!(text(&delivered), "once");
    sub.ack(&delivered).await;
    drop(publisher); // gone before sending PUBREL

    let (mut publisher, present) = TestClient::connect(addr(&broker), "pub7", false).await;
    assert!(present);
    let mut again = publish_packet("in/t", b"once", QoS::ExactlyOnce, false, 7);
    again.dup = true;
    publisher.send(again).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    assert_nothing_before_marker(&mut publisher, &mut sub, "in/marker").await;
    publisher.send(PubRel { pkid: 7 }).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(PubComp { pkid: 7 }));

    // Packet id 7 is free again: a new message with it is a new message.
    publisher.send(publish_packet("in/t", b"new", QoS::ExactlyOnce, false, 7)).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    let delivered = sub.recv_publish().await;
    assert_eq!(text(&delivered), "new");
    sub.ack(&delivered).await;
    publisher.send(PubRel { pkid: 7 }).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(PubComp { pkid: 7 }));
    publisher.disconnect().await;
    sub.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.2-6] [MQTT-3.2.2-1] a client that had a persistent session and reconnects with
/// clean session 1 starts afresh: session-present 0, no old subscription, no queued message.
#[tokio::test]
async fn clean_session_1_discards_the_persistent_session() {
    let broker = start_broker();
    let (mut client, _) = TestClient::connect(addr(&broker), "c", false).await;
    client.subscribe(&[("old/#", QoS::AtLeastOnce)]).await;
    client.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("old/queued", b"queued", QoS::AtLeastOnce, false).await;

    let (mut client, present) = TestClient::connect(addr(&broker), "c", true).await;
    assert!(!present, "clean session 1 gets session-present 0 [MQTT-3.2.2-1]");
    // `subscribe` fails if a queued PUBLISH comes before the SUBACK.
    client.subscribe(&[("m", QoS::AtLeastOnce)]).await;
    publisher.publish("old/new", b"old subscription", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut client, "m").await;
    client.disconnect().await;

    // Nor does the clean session leave anything behind for a later persistent one.
    publisher.publish("m", b"for nobody", QoS::AtLeastOnce, false).await;
    let (mut client, present) = TestClient::connect(addr(&broker), "c", false).await;
    assert!(!present, "[MQTT-3.2.2-3]");
    client.subscribe(&[("m2", QoS::AtLeastOnce)]).await;
    assert_nothing_before_marker(&mut publisher, &mut client, "m2").await;
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.2-6] [MQTT-3.2.2-3] the subscriptions of a clean-session-1 client end with its
/// connection: reconnecting (even with clean session 0) finds no session and no subscription.
#[tokio::test]
async fn clean_session_1_subscriptions_end_with_the_connection() {
    let broker = start_broker();
    let (mut client, _) = TestClient::connect(addr(&broker), "d", true).await;
    client.subscribe(&[("gone/#", QoS::AtLeastOnce)]).await;
    client.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("gone/1", b"while away", QoS::AtLeastOnce, false).await;

    let (mut client, present) = TestClient::connect(addr(&broker), "d", false).await;
    assert!(!present, "no session state was kept [MQTT-3.2.2-3]");
    client.subscribe(&[("m", QoS::AtLeastOnce)]).await;
    publisher.publish("gone/2", b"old subscription", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut client, "m").await;
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.2-5] `max-queued-messages` bounds what an offline session keeps: with a bound of 5
/// and 8 QoS 1 messages, the first 5 are delivered on return (a queue holding only QoS 1/2
/// messages refuses newcomers) and the 3 others are counted as dropped.
#[tokio::test]
async fn offline_queue_is_bounded_by_max_queued_messages() {
    let broker = start_broker_with("max-queued-messages: 5\n");
    let (mut sub, _) = TestClient::connect(addr(&broker), "bounded", false).await;
    sub.subscribe(&[("b/#", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for i in 0..8 {
        publisher.publish("b/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }

    let (mut sub, present) = TestClient::connect(addr(&broker), "bounded", false).await;
    assert!(present);
    // The session state, queue included, was handed over before CONNACK: the count is final.
    assert_eq!(broker.stats().messages_dropped, 3);
    for i in 0..5 {
        let publish = sub.recv_publish().await;
        assert_eq!(text(&publish), format!("m{i}"));
        sub.ack(&publish).await;
    }
    assert_nothing_before_marker(&mut publisher, &mut sub, "b/marker").await;
    assert_eq!(broker.stats().messages_dropped, 3);
    sub.disconnect().await;
    broker.stop();
}
