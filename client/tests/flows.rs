//! The client's packet flows checked byte by byte against a scripted fake broker: re-sending
//! with DUP after a reconnection, re-subscribing, exactly-once delivery of QoS 2, the in-flight
//! window, back-pressure and keep-alive.

mod common;

use amqtt_client::{ClientConfig, MqttClient, QoS};
use amqtt_protocol::{
    ByteString, Packet, PubAck, PubComp, PubRec, PubRel, Publish, SubAck, SubscribeFilter, SubscribeReturnCode,
};
use bytes::Bytes;
use common::*;

fn config() -> ClientConfig {
    ClientConfig { reconnect_retries: 2, reconnect_max_interval: 1, ..ClientConfig::default() }
}

/// Connects a client to the fake broker, answering its CONNECT with session present 0.
async fn connect(fake: &FakeBroker, client_id: &str, config: ClientConfig) -> (MqttClient, FakeConnection) {
    let client = MqttClient::new(Some(client_id), config);
    let connecting = {
        let client = client.clone();
        let url = fake.url();
        tokio::spawn(async move { client.connect(&url).await })
    };
    let (connection, connect) = fake.accept_session(false).await;
    assert_eq!(connect.client_id, client_id);
    assert!(!connecting.await.expect("task").expect("connect"));
    (client, connection)
}

fn publish_to_client(topic: &str, payload: &'static [u8], qos: QoS, pkid: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        pkid,
        payload: Bytes::from_static(payload),
    }
}

/// [MQTT-3.1.2-3] [MQTT-3.1.2-9] [MQTT-3.1.3-1] CONNECT carries the configured flags, keep-alive,
/// will and credentials.
#[tokio::test]
async fn connect_packet_from_config() {
    let fake = FakeBroker::start().await;
    let config = ClientConfig {
        keep_alive: 42,
        cleansession: false,
        will: Some(amqtt_client::WillConfig {
            topic: "w/t".into(),
            message: Bytes::from_static(b"bye"),
            qos: QoS::ExactlyOnce,
            retain: true,
        }),
        ..config()
    };
    let client = MqttClient::new(Some("flags"), config);
    let url = fake.url().replace("mqtt://", "mqtt://u%20ser:p%40ss@");
    let connecting = tokio::spawn(async move { client.connect(&url).await });
    let (_connection, connect) = fake.accept_session(true).await;
    assert!(connecting.await.expect("task").expect("connect"), "session present is reported");
    assert_eq!((connect.protocol_name.as_ref(), connect.protocol_level), ("MQTT", 4));
    assert_eq!((connect.keep_alive, connect.clean_session), (42, false));
    assert_eq!(connect.username.as_deref(), Some("u ser"));
    assert_eq!(connect.password.as_deref(), Some(&b"p@ss"[..]));
    let will = connect.will.expect("will");
    assert_eq!(
        (will.topic.as_ref(), &will.message[..], will.qos, will.retain),
        ("w/t", &b"bye"[..], QoS::ExactlyOnce, true)
    );
}

/// [MQTT-4.4.0-1] [MQTT-3.3.1-1] an unacknowledged QoS 1 PUBLISH is sent again on the new
/// connection with the same packet id and DUP set, and `publish` completes on its PUBACK.
#[tokio::test]
async fn qos1_resent_with_dup_after_reconnect() {
    let fake = FakeBroker::start().await;
    let (client, mut first) = connect(&fake, "resend1", config()).await;
    let publishing = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("r/1", "once", Some(QoS::AtLeastOnce), None).await })
    };
    let Packet::Publish(original) = first.recv().await else { panic!("expected PUBLISH") };
    assert!(!original.dup);
    drop(first);

    let (mut second, _) = fake.accept_session(true).await;
    let Packet::Publish(again) = second.recv().await else { panic!("expected the PUBLISH again") };
    assert!(again.dup, "a re-sent PUBLISH has DUP set");
    assert_eq!((again.pkid, again.topic.as_ref(), &again.payload[..]), (original.pkid, "r/1", &b"once"[..]));
    second.send(PubAck { pkid: again.pkid }).await;
    let sent = publishing.await.expect("task").expect("publish completes on the new connection");
    assert_eq!(&sent.payload[..], b"once");
}

/// [MQTT-4.3.3-1] [MQTT-4.4.0-1] once PUBREC came back, what is re-sent after a reconnection is
/// the PUBREL, not the PUBLISH; `publish` completes on PUBCOMP.
#[tokio::test]
async fn qos2_pubrel_resent_after_reconnect() {
    let fake = FakeBroker::start().await;
    let (client, mut first) = connect(&fake, "resend2", config()).await;
    let publishing = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("r/2", "exactly", Some(QoS::ExactlyOnce), None).await })
    };
    let Packet::Publish(publish) = first.recv().await else { panic!("expected PUBLISH") };
    first.send(PubRec { pkid: publish.pkid }).await;
    assert_eq!(first.recv().await, Packet::PubRel(PubRel { pkid: publish.pkid }));
    drop(first);

    let (mut second, _) = fake.accept_session(true).await;
    assert_eq!(second.recv().await, Packet::PubRel(PubRel { pkid: publish.pkid }), "only the PUBREL is re-sent");
    second.send(PubComp { pkid: publish.pkid }).await;
    let sent = publishing.await.expect("task").expect("publish completes");
    assert_eq!(sent.qos, QoS::ExactlyOnce);
}

/// After a reconnection without a session (session present 0) the client subscribes again to
/// every granted filter with its QoS; with a session present it does not. A filter
/// unsubscribed before is not brought back.
#[tokio::test]
async fn resubscribes_only_without_a_session() {
    let fake = FakeBroker::start().await;
    let (client, mut first) = connect(&fake, "resub", config()).await;
    let subscribing = {
        let client = client.clone();
        tokio::spawn(async move {
            client.subscribe(&[("a/#", QoS::AtLeastOnce), ("b", QoS::ExactlyOnce), ("gone", QoS::AtMostOnce)]).await
        })
    };
    let Packet::Subscribe(subscribe) = first.recv().await else { panic!("expected SUBSCRIBE") };
    let granted = vec![
        SubscribeReturnCode::Success(QoS::AtLeastOnce),
        SubscribeReturnCode::Success(QoS::ExactlyOnce),
        SubscribeReturnCode::Success(QoS::AtMostOnce),
    ];
    first.send(SubAck { pkid: subscribe.pkid, return_codes: granted.clone() }).await;
    assert_eq!(subscribing.await.expect("task").expect("subscribe"), granted);
    let unsubscribing = {
        let client = client.clone();
        tokio::spawn(async move { client.unsubscribe(&["gone"]).await })
    };
    let Packet::Unsubscribe(unsubscribe) = first.recv().await else { panic!("expected UNSUBSCRIBE") };
    first.send(amqtt_protocol::UnsubAck { pkid: unsubscribe.pkid }).await;
    unsubscribing.await.expect("task").expect("unsubscribe");
    drop(first);

    // No session on the broker: everything still subscribed is subscribed again.
    let (mut second, _) = fake.accept_session(false).await;
    let Packet::Subscribe(again) = second.recv().await else { panic!("expected a re-subscription") };
    let expected = vec![
        SubscribeFilter { filter: "a/#".into(), qos: QoS::AtLeastOnce },
        SubscribeFilter { filter: "b".into(), qos: QoS::ExactlyOnce },
    ];
    assert_eq!(again.filters, expected);
    second
        .send(SubAck { pkid: again.pkid, return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce); 2] })
        .await;
    drop(second);

    // The broker kept the session: nothing is subscribed again, the next packet is the marker.
    let (mut third, _) = fake.accept_session(true).await;
    let marker = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("marker", "m", Some(QoS::AtMostOnce), None).await })
    };
    match third.recv().await {
        Packet::Publish(publish) => assert_eq!(publish.topic, "marker"),
        other => panic!("expected only the marker, got {other:?}"),
    }
    marker.await.expect("task").expect("marker");
}

/// [MQTT-4.3.3-2] a QoS 2 message re-sent by the broker (same packet id, before PUBREL) is
/// acknowledged again but delivered once; PUBREL is answered with PUBCOMP.
#[tokio::test]
async fn incoming_qos2_delivered_exactly_once() {
    let fake = FakeBroker::start().await;
    let (client, mut broker) = connect(&fake, "exactly", config()).await;
    broker.send(publish_to_client("q2", b"once", QoS::ExactlyOnce, 7)).await;
    assert_eq!(broker.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    broker.send(Publish { dup: true, ..publish_to_client("q2", b"once", QoS::ExactlyOnce, 7) }).await;
    assert_eq!(broker.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    broker.send(PubRel { pkid: 7 }).await;
    assert_eq!(broker.recv().await, Packet::PubComp(PubComp { pkid: 7 }));
    broker.send(publish_to_client("marker", b"m", QoS::AtMostOnce, 0)).await;

    let first = next_message(&client).await;
    assert_eq!((first.topic.as_str(), first.qos, first.dup), ("q2", QoS::ExactlyOnce, false));
    assert_eq!(next_message(&client).await.topic, "marker", "the duplicate must not be delivered");
    // After PUBREL the id is free again: a new message with it is a new message.
    broker.send(publish_to_client("q2", b"new", QoS::ExactlyOnce, 7)).await;
    assert_eq!(broker.recv().await, Packet::PubRec(PubRec { pkid: 7 }));
    assert_eq!(&next_message(&client).await.payload[..], b"new");
}

/// At most 64 QoS 1 publishes are in flight; the others wait (a QoS 0 publish is not held
/// behind them), and each acknowledgement lets the next one go, with an id not in use
/// [MQTT-2.3.1-2].
#[tokio::test]
async fn inflight_window_holds_the_rest() {
    let fake = FakeBroker::start().await;
    let (client, mut broker) = connect(&fake, "window", config()).await;
    let publishes: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.publish("w", i.to_string(), Some(QoS::AtLeastOnce), None).await })
        })
        .collect();
    let mut in_flight = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let Packet::Publish(publish) = broker.recv().await else { panic!("expected PUBLISH") };
        assert!(in_flight.insert(publish.pkid), "packet id {} used twice", publish.pkid);
    }
    client.publish("marker", "m", Some(QoS::AtMostOnce), None).await.expect("QoS 0 is not held back");
    match broker.recv().await {
        Packet::Publish(publish) => assert_eq!(publish.topic, "marker", "a 65th message went out"),
        other => panic!("expected the marker, got {other:?}"),
    }
    let first = *in_flight.iter().next().expect("one");
    broker.send(PubAck { pkid: first }).await;
    in_flight.remove(&first);
    let Packet::Publish(next) = broker.recv().await else { panic!("expected the next PUBLISH") };
    assert!(!in_flight.contains(&next.pkid), "id {} is still in use", next.pkid);
    in_flight.insert(next.pkid);
    // Acknowledge everything as it comes; all 100 complete.
    let mut acked = 1;
    for pkid in std::mem::take(&mut in_flight) {
        broker.send(PubAck { pkid }).await;
        acked += 1;
    }
    while acked < 100 {
        let Packet::Publish(publish) = broker.recv().await else { panic!("expected PUBLISH") };
        broker.send(PubAck { pkid: publish.pkid }).await;
        acked += 1;
    }
    for result in futures_util::future::join_all(publishes).await {
        result.expect("task").expect("publish");
    }
}

/// When the application does not take messages, the client stops acknowledging them at its
/// delivery queue's limit (1 000) and stops reading: back-pressure, no loss. Taking one message
/// lets the next one be acknowledged.
#[tokio::test]
async fn backpressure_when_messages_are_not_taken() {
    let fake = FakeBroker::start().await;
    let (client, mut broker) = connect(&fake, "slow", config()).await;
    for pkid in 1..=1001u16 {
        broker.send(publish_to_client("bp", b"x", QoS::AtLeastOnce, pkid)).await;
    }
    for pkid in 1..=1000u16 {
        assert_eq!(broker.recv().await, Packet::PubAck(PubAck { pkid }));
    }
    client.publish("marker", "m", Some(QoS::AtMostOnce), None).await.expect("publish");
    match broker.recv().await {
        Packet::Publish(publish) => assert_eq!(publish.topic, "marker", "message 1001 must not be acknowledged yet"),
        other => panic!("expected the marker, got {other:?}"),
    }
    next_message(&client).await;
    assert_eq!(broker.recv().await, Packet::PubAck(PubAck { pkid: 1001 }));
    for _ in 2..=1001 {
        assert_eq!(next_message(&client).await.topic, "bp");
    }
}

/// [MQTT-3.1.2-23] an idle client sends PINGREQ within its keep-alive; when no PINGRESP comes
/// it deems the connection dead and reconnects.
#[tokio::test]
async fn keepalive_ping_and_reconnect_without_pingresp() {
    let fake = FakeBroker::start().await;
    let config = ClientConfig { keep_alive: 1, ..config() };
    let (_client, mut first) = connect(&fake, "pinger", config).await;
    assert_eq!(first.recv().await, Packet::PingReq);
    first.send(Packet::PingResp).await;
    assert_eq!(first.recv().await, Packet::PingReq, "pings go on while the connection is idle");
    // No answer this time: the client closes and comes back.
    assert!(first.closed().await.is_empty(), "nothing but the close after the unanswered PINGREQ");
    let (_second, connect) = fake.accept_session(false).await;
    assert_eq!(connect.client_id, "pinger");
}

/// `disconnect()` sends DISCONNECT after what is already queued and closes; the client does not
/// reconnect afterwards.
#[tokio::test]
async fn disconnect_sends_disconnect_and_stays_down() {
    let fake = FakeBroker::start().await;
    let (client, mut broker) = connect(&fake, "bye", config()).await;
    client.publish("last", "words", Some(QoS::AtMostOnce), None).await.expect("publish");
    client.disconnect().await.expect("disconnect");
    let packets = broker.closed().await;
    assert!(matches!(&packets[..], [Packet::Publish(p), Packet::Disconnect] if p.topic == "last"), "{packets:?}");
    assert!(matches!(client.publish("x", "y", None, None).await, Err(amqtt_client::ClientError::NotConnected)));
}
