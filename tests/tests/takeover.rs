//! A new connection with the client id of a connected client takes its place: the broker closes
//! the existing connection [MQTT-3.1.4-2] and, for clean session 0 on both, hands its session
//! to the new one.

use amqtt_tests::*;

/// Clean session flags, for readable calls.
const CLEAN: bool = true;
const PERSISTENT: bool = false;

/// A takeover that resumes nothing: `client_id` connects with clean session `first` and
/// subscribes to `t/#`, then connects again with clean session `second`. The first connection
/// is closed, the second gets session present 0 (`statement` says which rule requires it) and
/// the old subscription routes nothing to it.
async fn assert_takeover_starts_afresh(client_id: &str, first: bool, second: bool, statement: &str) {
    let broker = start_broker();
    let (mut first, _) = TestClient::connect(addr(&broker), client_id, first).await;
    first.subscribe(&[("t/#", QoS::AtLeastOnce)]).await;
    let (mut second, present) = TestClient::connect(addr(&broker), client_id, second).await;
    assert!(!present, "{statement}");
    first.expect_closed().await;
    second.subscribe(&[("m", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("t/x", b"old subscription", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut second, "m").await;
    second.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.4-2] the first connection is closed by the broker, the second is accepted and works.
#[tokio::test]
async fn second_connection_closes_the_first() {
    let broker = start_broker();
    let (mut first, _) = TestClient::connect(addr(&broker), "same-id", true).await;
    let (mut second, present) = TestClient::connect(addr(&broker), "same-id", true).await;
    assert!(!present);
    first.expect_closed().await;
    second.ping().await;
    assert_eq!(broker.stats().clients_connected, 1);
    second.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.4-2] [MQTT-3.1.2-4] [MQTT-3.2.2-2] [MQTT-4.4.0-1] with clean session 0 on both
/// connections, the second resumes the first's session: session-present 1, the subscriptions
/// without a new SUBSCRIBE, and the messages the first had not acknowledged, re-sent with DUP 1.
#[tokio::test]
async fn persistent_takeover_moves_subscriptions_and_inflight_messages() {
    let broker = start_broker();
    let (mut first, _) = TestClient::connect(addr(&broker), "mover", false).await;
    first.subscribe(&[("t/#", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("t/1", b"one", QoS::AtLeastOnce, false).await;
    publisher.publish("t/2", b"two", QoS::AtLeastOnce, false).await;
    let unacked = [first.recv_publish().await, first.recv_publish().await];
    assert_eq!([text(&unacked[0]), text(&unacked[1])], ["one", "two"]);

    let (mut second, present) = TestClient::connect(addr(&broker), "mover", false).await;
    assert!(present, "session-present 1 [MQTT-3.2.2-2]");
    first.expect_closed().await;
    for original in &unacked {
        let again = second.recv_publish().await;
        assert!(again.dup, "re-delivery has DUP 1 [MQTT-3.3.1-1]: {again:?}");
        assert_eq!((again.pkid, &again.payload), (original.pkid, &original.payload));
        second.ack(&again).await;
    }
    publisher.publish("t/3", b"three", QoS::AtLeastOnce, false).await;
    let fresh = second.recv_publish().await;
    assert_eq!((text(&fresh), fresh.dup), ("three", false));
    second.ack(&fresh).await;
    assert_nothing_before_marker(&mut publisher, &mut second, "t/marker").await;
    second.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.4-2] [MQTT-3.1.2-6] [MQTT-3.2.2-1] a takeover with clean session 1 closes the first
/// connection and discards its session: session-present 0, no subscription.
#[tokio::test]
async fn clean_takeover_discards_the_first_connections_subscriptions() {
    assert_takeover_starts_afresh("cleaner", PERSISTENT, CLEAN, "[MQTT-3.2.2-1]").await;
}

/// [MQTT-3.1.4-2] [MQTT-3.1.2-6] [MQTT-3.2.2-3] taking over a clean-session-1 connection with
/// clean session 0 does not resume anything: its state lasted only as long as its connection.
#[tokio::test]
async fn persistent_takeover_of_a_clean_connection_starts_afresh() {
    assert_takeover_starts_afresh("was-clean", CLEAN, PERSISTENT, "[MQTT-3.2.2-3]").await;
}

/// [MQTT-3.1.4-2] a chain of three takeovers in quick succession (each CONNECT sent as soon as
/// the previous CONNACK arrived, without waiting for any close): the first two are closed, the
/// last has the session and works.
#[tokio::test]
async fn takeover_chain_ends_with_the_last_connection() {
    let broker = start_broker();
    let (mut c1, _) = TestClient::connect(addr(&broker), "chain", false).await;
    c1.subscribe(&[("chain/#", QoS::AtLeastOnce)]).await;
    let (mut c2, present2) = TestClient::connect(addr(&broker), "chain", false).await;
    let (mut c3, present3) = TestClient::connect(addr(&broker), "chain", false).await;
    assert!(present2 && present3);
    c1.expect_closed().await;
    c2.expect_closed().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    assert_eq!(broker.stats().clients_connected, 2, "c3 and the publisher");
    publisher.publish("chain/x", b"to the last", QoS::AtLeastOnce, false).await;
    let got = c3.recv_publish().await;
    assert_eq!(text(&got), "to the last");
    c3.ack(&got).await;
    assert_nothing_before_marker(&mut publisher, &mut c3, "chain/marker").await;
    c3.disconnect().await;
    broker.stop();
}

/// [MQTT-3.1.4-2] three CONNECTs with one client id sent back to back on three sockets: whatever
/// order the broker registers them in, exactly one connection survives, it holds the session
/// (its subscription routes to it) and the two others are closed.
#[tokio::test]
async fn simultaneous_takeovers_leave_exactly_one_connection() {
    let broker = start_broker();
    let (mut setup, _) = TestClient::connect(addr(&broker), "race", false).await;
    setup.subscribe(&[("race/#", QoS::AtLeastOnce)]).await;
    setup.disconnect().await;

    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(LenientClient::open(addr(&broker)).await);
    }
    for conn in &mut conns {
        conn.send(connect_packet("race", false)).await;
    }
    // Each is answered with CONNACK, or closed if it lost the race before being answered.
    let mut answered = Vec::new();
    for (i, conn) in conns.iter_mut().enumerate() {
        match conn.recv_or_closed().await {
            Some(Packet::ConnAck(connack)) => {
                assert_eq!(connack.code, ConnectReturnCode::Accepted);
                answered.push(i);
            }
            None => {}
            Some(other) => panic!("expected CONNACK or a close, got {other:?}"),
        }
    }
    assert!(!answered.is_empty(), "the connection registered last must be answered");

    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("race/x", b"winner", QoS::AtLeastOnce, false).await;
    let mut survivors = Vec::new();
    for i in answered {
        match conns[i].recv_or_closed().await {
            Some(Packet::Publish(publish)) => {
                assert_eq!(text(&publish), "winner");
                conns[i].send(PubAck { pkid: publish.pkid }).await;
                survivors.push(i);
            }
            None => {}
            Some(other) => panic!("expected the message or a close, got {other:?}"),
        }
    }
    assert_eq!(survivors.len(), 1, "exactly one connection keeps the client id");
    assert_eq!(broker.stats().clients_connected, 2, "the survivor and the publisher");
    let winner = &mut conns[survivors[0]];
    winner.send(Packet::PingReq).await;
    assert_eq!(winner.recv_or_closed().await, Some(Packet::PingResp));
    broker.stop();
}

/// [MQTT-3.1.4-2] [MQTT-3.1.2-8] the connection closed by a takeover did not send DISCONNECT, so
/// its will is published.
#[tokio::test]
async fn takeover_publishes_the_will_of_the_closed_connection() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let connect = Connect {
        will: Some(last_will("will/taken", b"taken over", QoS::AtLeastOnce, false)),
        ..connect_packet("taken", true)
    };
    let (mut first, _) = TestClient::connect_accepted(addr(&broker), connect).await;
    let (second, _) = TestClient::connect(addr(&broker), "taken", true).await;
    first.expect_closed().await;
    let will = watcher.recv_publish().await;
    assert_eq!((&*will.topic, text(&will), will.qos), ("will/taken", "taken over", QoS::AtLeastOnce));
    watcher.ack(&will).await;
    // Only once, and the new connection has no will of its own to publish.
    second.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    assert_nothing_before_marker(&mut publisher, &mut watcher, "will/marker").await;
    broker.stop();
}
