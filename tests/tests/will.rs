//! The will message: published when a connection ends any other way than DISCONNECT
//! [MQTT-3.1.2-8], with the will's QoS and retain flag, and never after DISCONNECT
//! [MQTT-3.1.2-10, MQTT-3.14.4-3].

use std::net::SocketAddr;
use std::time::Duration;

use amqtt_tests::*;

/// A CONNECT with a will on `topic` whose message is "will of `client_id`" (see `expect_will`).
fn will_connect(client_id: &str, clean_session: bool, topic: &str, qos: QoS, retain: bool) -> Connect {
    let message = format!("will of {client_id}");
    Connect {
        will: Some(last_will(topic, message.as_bytes(), qos, retain)),
        ..connect_packet(client_id, clean_session)
    }
}

/// Connects with a will (from `will_connect`), asserting the broker accepts.
async fn connect_will(addr: SocketAddr, connect: Connect) -> TestClient {
    TestClient::connect_accepted(addr, connect).await.0
}

/// Receives the will of `client_id` on `topic` and checks its QoS and RETAIN flag.
async fn expect_will(watcher: &mut TestClient, topic: &str, client_id: &str, qos: QoS, retain: bool) {
    let will = watcher.recv_publish().await;
    assert_eq!(
        (&*will.topic, text(&will), will.qos, will.retain),
        (topic, format!("will of {client_id}").as_str(), qos, retain),
        "unexpected will: {will:?}"
    );
    watcher.ack(&will).await;
}

/// [MQTT-3.1.2-8] [MQTT-3.1.2-9] [MQTT-3.1.2-16] [MQTT-3.1.2-10] the socket closes without
/// DISCONNECT: the will goes out once, at its QoS, not retained.
#[tokio::test]
async fn will_published_when_the_socket_closes_without_disconnect() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::ExactlyOnce)]).await;
    let connect = will_connect("dropper", true, "will/dropper", QoS::AtLeastOnce, false);
    let client = connect_will(addr(&broker), connect).await;
    drop(client);
    expect_will(&mut watcher, "will/dropper", "dropper", QoS::AtLeastOnce, false).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    assert_nothing_before_marker(&mut publisher, &mut watcher, "will/marker").await;
    assert_eq!(broker.stats().retained_messages, 0, "a will with retain 0 is not retained [MQTT-3.1.2-16]");
    broker.stop();
}

/// [MQTT-3.1.2-8] [MQTT-3.1.2-24] a client silent for longer than 1.5 times its keep-alive is
/// disconnected by the broker, and its will is published.
#[tokio::test]
async fn will_published_when_keep_alive_expires() {
    let broker = start_broker_with("timeout-disconnect-delay: 0\n");
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let mut connect = will_connect("silent", true, "will/silent", QoS::AtLeastOnce, false);
    connect.keep_alive = 1;
    let mut client = connect_will(addr(&broker), connect).await;
    // Still open well before 1.5 s, closed after it (generous bound).
    assert!(!client.closed_within(Duration::from_millis(1000)).await, "closed before 1.5 x keep-alive");
    assert!(client.closed_within(WAIT).await, "silent client not disconnected");
    expect_will(&mut watcher, "will/silent", "silent", QoS::AtLeastOnce, false).await;
    broker.stop();
}

/// [MQTT-3.1.2-8] [MQTT-4.8.0-1] the broker closes a connection for a protocol violation (a
/// packet of reserved type 0 after CONNECT): the will is published.
#[tokio::test]
async fn will_published_when_the_client_breaks_the_protocol() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let connect = will_connect("garbler", true, "will/garbler", QoS::AtLeastOnce, false);
    let mut client = connect_will(addr(&broker), connect).await;
    client.send_bytes(&[0x00, 0x00, 0xFF, 0xFF]).await;
    client.expect_closed().await;
    expect_will(&mut watcher, "will/garbler", "garbler", QoS::AtLeastOnce, false).await;
    assert_eq!(broker.stats().protocol_errors, 1);
    broker.stop();
}

/// [MQTT-3.1.2-8] [MQTT-3.1.4-2] a connection closed by a takeover publishes its will, also when
/// the new connection resumes its persistent session.
#[tokio::test]
async fn will_published_when_the_connection_is_taken_over() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let connect = will_connect("twin", false, "will/twin", QoS::AtLeastOnce, false);
    let mut first = connect_will(addr(&broker), connect).await;
    let (mut second, present) = TestClient::connect(addr(&broker), "twin", false).await;
    assert!(present);
    first.expect_closed().await;
    expect_will(&mut watcher, "will/twin", "twin", QoS::AtLeastOnce, false).await;
    second.ping().await;
    // The second connection has no will: closing it publishes nothing.
    drop(second);
    let (mut third, _) = TestClient::connect(addr(&broker), "twin", false).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    assert_nothing_before_marker(&mut publisher, &mut watcher, "will/marker").await;
    third.ping().await;
    broker.stop();
}

/// [MQTT-3.14.4-3] [MQTT-3.1.2-10] DISCONNECT discards the will: nothing is published.
#[tokio::test]
async fn will_not_published_after_disconnect() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let connect = will_connect("polite", false, "will/polite", QoS::AtLeastOnce, true);
    let client = connect_will(addr(&broker), connect).await;
    client.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    assert_nothing_before_marker(&mut publisher, &mut watcher, "will/marker").await;
    assert_eq!(broker.stats().retained_messages, 0);
    broker.stop();
}

/// [MQTT-3.1.2-17] [MQTT-3.3.1-8] [MQTT-3.3.1-9] a will with retain 1 is published as a retained
/// message: existing subscribers get it with RETAIN 0, a later subscriber with RETAIN 1.
#[tokio::test]
async fn retained_will_becomes_the_retained_message() {
    let broker = start_broker();
    let mut watcher = subscriber(addr(&broker), "watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let client = connect_will(addr(&broker), will_connect("keeper", true, "will/keeper", QoS::AtLeastOnce, true)).await;
    drop(client);
    expect_will(&mut watcher, "will/keeper", "keeper", QoS::AtLeastOnce, false).await;
    assert_eq!(broker.stats().retained_messages, 1);

    let (mut later, _) = TestClient::connect(addr(&broker), "later", true).await;
    later.subscribe(&[("will/keeper", QoS::AtLeastOnce)]).await;
    expect_will(&mut later, "will/keeper", "keeper", QoS::AtLeastOnce, true).await;
    broker.stop();
}

/// [MQTT-3.1.2-14] [MQTT-3.8.4-6] a will is delivered like any message of its QoS: at the lower of
/// the will QoS and the QoS granted to each subscriber.
#[tokio::test]
async fn will_delivered_at_the_lower_of_will_and_granted_qos() {
    let broker = start_broker();
    let mut watchers = Vec::new();
    for granted in QOS_ALL {
        watchers.push((granted, subscriber(addr(&broker), &format!("w{}", granted as u8), &[("wq/#", granted)]).await));
    }
    for will_qos in QOS_ALL {
        let id = format!("q{}", will_qos as u8);
        let topic = format!("wq/{id}");
        let client = connect_will(addr(&broker), will_connect(&id, true, &topic, will_qos, false)).await;
        drop(client);
        for (granted, watcher) in &mut watchers {
            expect_will(watcher, &topic, &id, will_qos.min(*granted), false).await;
        }
    }
    broker.stop();
}

/// [MQTT-4.7.2-1] topics beginning with `$` are the server's: a client's will on one is not
/// routed, even to a subscriber of that exact `$` filter.
#[tokio::test]
async fn will_on_a_dollar_topic_is_not_routed() {
    let broker = start_broker();
    let (mut watcher, _) = TestClient::connect(addr(&broker), "watcher", true).await;
    watcher.subscribe(&[("$will/#", QoS::AtLeastOnce), ("m", QoS::AtLeastOnce)]).await;
    let connect = will_connect("dollar", true, "$will/dollar", QoS::AtLeastOnce, true);
    let mut client = connect_will(addr(&broker), connect).await;
    // A protocol violation: the broker closes the connection itself, so once the close is seen
    // the will (had it been routed) is already on its way, ahead of the marker.
    client.send_bytes(&[0x00, 0x00]).await;
    client.expect_closed().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    assert_nothing_before_marker(&mut publisher, &mut watcher, "m").await;
    assert_eq!(broker.stats().retained_messages, 0, "nor retained");
    broker.stop();
}
