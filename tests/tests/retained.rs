//! Retained messages end to end (MQTT 3.1.1 section 3.3.1.3): stored, replaced, cleared,
//! forwarded, sent to new subscriptions at the right QoS, matched by wildcards, and counted.

use std::collections::BTreeMap;

use amqtt_tests::*;

/// [MQTT-3.3.1-5] a PUBLISH with RETAIN=1 is stored, and [MQTT-3.3.1-8] sent with RETAIN=1 to a
/// client that subscribes afterwards [MQTT-3.3.1-6]; only once.
#[tokio::test]
async fn retained_message_goes_to_later_subscriber_with_retain_set() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("r/t", b"kept", QoS::AtLeastOnce, true).await;

    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    sub.subscribe(&[("r/t", QoS::AtLeastOnce)]).await;
    let got = sub.recv_publish().await;
    assert_eq!((topic(&got), got.payload.as_ref(), got.qos), ("r/t", b"kept".as_ref(), QoS::AtLeastOnce));
    assert!(got.retain, "[MQTT-3.3.1-8] RETAIN must be 1 on a retained message sent to a new subscription");
    assert!(!got.dup);
    sub.ack(&got).await;
    // The marker goes to the existing subscription: RETAIN 0 [MQTT-3.3.1-9].
    assert_nothing_before_marker(&mut publisher, &mut sub, "r/t").await;
    assert_eq!(broker.stats().retained_messages, 1);
    broker.stop();
}

/// [MQTT-3.3.1-5] a new retained message on a topic replaces the previous one: a later
/// subscriber gets only the newest.
#[tokio::test]
async fn new_retained_message_replaces_the_old_one() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("r/t", b"old", QoS::AtLeastOnce, true).await;
    publisher.publish("r/t", b"new", QoS::AtLeastOnce, true).await;

    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    sub.subscribe(&[("r/t", QoS::AtLeastOnce)]).await;
    let got = sub.recv_publish().await;
    assert_eq!((got.payload.as_ref(), got.retain), (b"new".as_ref(), true));
    sub.ack(&got).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "r/t").await;
    assert_eq!(broker.stats().retained_messages, 1);
    broker.stop();
}

/// [MQTT-3.3.1-10] a zero-length retained PUBLISH is delivered as normal to existing
/// subscribers and removes the retained message, so later subscribers get nothing;
/// [MQTT-3.3.1-11] it is not stored itself.
#[tokio::test]
async fn zero_length_retained_publish_clears_and_is_delivered() {
    let broker = start_broker();
    let (mut existing, mut publisher) = subscriber_and_publisher(addr(&broker), &[("r/t", QoS::AtLeastOnce)]).await;
    publisher.publish("r/t", b"value", QoS::AtLeastOnce, true).await;
    let got = existing.recv_publish().await;
    assert_eq!(got.payload.as_ref(), b"value");
    existing.ack(&got).await;
    publisher.router_sync().await;
    assert_eq!(broker.stats().retained_messages, 1);

    publisher.publish("r/t", b"", QoS::AtLeastOnce, true).await;
    let got = existing.recv_publish().await;
    assert_eq!((topic(&got), got.payload.len(), got.retain), ("r/t", 0, false), "[MQTT-3.3.1-10] delivered as normal");
    existing.ack(&got).await;

    let (mut later, _) = TestClient::connect(addr(&broker), "later", true).await;
    later.subscribe(&[("r/t", QoS::AtLeastOnce)]).await;
    assert_nothing_before_marker(&mut publisher, &mut later, "r/t").await;
    assert_eq!(broker.stats().retained_messages, 0, "[MQTT-3.3.1-11] a zero-byte retained message is not stored");

    // A zero-length retained PUBLISH on a topic without a retained message stores nothing.
    publisher.publish("r/none", b"", QoS::AtMostOnce, true).await;
    publisher.ping().await;
    let (mut last, _) = TestClient::connect(addr(&broker), "last", true).await;
    last.subscribe(&[("r/+", QoS::AtLeastOnce)]).await;
    assert_nothing_before_marker(&mut publisher, &mut last, "r/marker").await;
    assert_eq!(broker.stats().retained_messages, 0);
    broker.stop();
}

/// [MQTT-3.3.1-9] a retained PUBLISH is forwarded with RETAIN=0 to clients whose subscription
/// existed before it arrived, while it is still stored for later ones.
#[tokio::test]
async fn retained_publish_is_forwarded_with_retain_0_to_existing_subscribers() {
    let broker = start_broker();
    let (mut existing, mut publisher) = subscriber_and_publisher(addr(&broker), &[("r/t", QoS::ExactlyOnce)]).await;
    for qos in QOS_ALL {
        publisher.publish("r/t", b"live", qos, true).await;
        let got = existing.recv_publish().await;
        assert_eq!((got.payload.as_ref(), got.qos), (b"live".as_ref(), qos));
        assert!(!got.retain, "[MQTT-3.3.1-9] RETAIN must be 0 for an existing subscription (QoS {qos:?})");
        existing.ack(&got).await;
    }
    let (mut later, _) = TestClient::connect(addr(&broker), "later", true).await;
    later.subscribe(&[("r/t", QoS::ExactlyOnce)]).await;
    let got = later.recv_publish().await;
    assert!(got.retain, "still stored for a new subscription");
    later.ack(&got).await;
    broker.stop();
}

/// [MQTT-3.8.4-3] subscribing again with the same filter replaces the subscription and re-sends
/// the matching retained messages, with RETAIN=1 [MQTT-3.3.1-8].
#[tokio::test]
async fn resubscribing_sends_the_retained_message_again() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("r/t", b"kept", QoS::AtLeastOnce, true).await;
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    for granted in [QoS::AtLeastOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
        sub.subscribe(&[("r/t", granted)]).await;
        let got = sub.recv_publish().await;
        assert_eq!((got.payload.as_ref(), got.retain, got.qos), (b"kept".as_ref(), true, granted));
        sub.ack(&got).await;
    }
    assert_nothing_before_marker(&mut publisher, &mut sub, "r/t").await;
    broker.stop();
}

/// [MQTT-3.8.4-6] retained messages go to a new subscription at the lower of the QoS they were
/// published with and the granted QoS: all nine combinations.
#[tokio::test]
async fn retained_messages_are_delivered_at_min_qos() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for qos in QOS_ALL {
        publisher.publish(&format!("rq/{}", qos as u8), b"v", qos, true).await;
    }
    publisher.ping().await;
    for granted in QOS_ALL {
        let (mut sub, _) = TestClient::connect(addr(&broker), &format!("sub{}", granted as u8), true).await;
        assert_eq!(sub.subscribe(&[("rq/+", granted)]).await, vec![SubscribeReturnCode::Success(granted)]);
        let got: BTreeMap<String, (QoS, bool)> =
            sub.collect(3).await.iter().map(|p| (topic(p).to_string(), (p.qos, p.retain))).collect();
        let expected: BTreeMap<String, (QoS, bool)> =
            QOS_ALL.iter().map(|&qos| (format!("rq/{}", qos as u8), (qos.min(granted), true))).collect();
        assert_eq!(got, expected, "granted {granted:?}");
        assert_nothing_before_marker(&mut publisher, &mut sub, "rq/marker").await;
    }
    broker.stop();
}

/// [MQTT-3.3.1-6] a wildcard subscription receives the retained message of every matching topic
/// and of no other (section 4.7.1: `#` includes the parent level, `+` one level); `#` works with
/// normal topics (`$` topics cannot be retained by clients, see publish.rs).
#[tokio::test]
async fn wildcard_subscription_gets_every_matching_retained_message() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    let topics = ["w", "w/a", "w/b", "w/b/c", "x/a", "w/"];
    for t in topics {
        publisher.publish(t, t.as_bytes(), QoS::AtLeastOnce, true).await;
    }
    let cases: [(&str, &[&str], &str); 6] = [
        ("w/#", &["w", "w/", "w/a", "w/b", "w/b/c"], "w/marker"),
        ("w/+", &["w/", "w/a", "w/b"], "w/marker"),
        ("+/a", &["w/a", "x/a"], "m/a"),
        ("+/+/c", &["w/b/c"], "m/m/c"),
        ("#", &["w", "w/", "w/a", "w/b", "w/b/c", "x/a"], "marker"),
        ("w/b", &["w/b"], "w/b"),
    ];
    for (i, (filter, expected, marker)) in cases.into_iter().enumerate() {
        let (mut sub, _) = TestClient::connect(addr(&broker), &format!("sub{i}"), true).await;
        sub.subscribe(&[(filter, QoS::AtLeastOnce)]).await;
        let got = sub.collect(expected.len()).await;
        let mut received: Vec<&str> = got.iter().map(topic).collect();
        received.sort_unstable();
        assert_eq!(received, expected, "retained messages for {filter}");
        for p in &got {
            assert!(p.retain, "RETAIN=1 [MQTT-3.3.1-8]");
            assert_eq!(p.payload.as_ref(), p.topic.as_bytes(), "payload of {}", topic(p));
        }
        assert_nothing_before_marker(&mut publisher, &mut sub, marker).await;
    }
    assert_eq!(broker.stats().retained_messages, topics.len());
    broker.stop();
}

/// A QoS 0 PUBLISH with RETAIN=1 is retained too (the server may discard it later
/// [MQTT-3.3.1-7]; this broker keeps it), and delivered at QoS 0.
#[tokio::test]
async fn qos0_retained_message_is_kept() {
    let broker = start_broker();
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("r/q0", b"zero", QoS::AtMostOnce, true).await;
    // PINGRESP comes after the PUBLISH was handed to the router.
    publisher.ping().await;
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    sub.subscribe(&[("r/q0", QoS::ExactlyOnce)]).await;
    let got = sub.recv_publish().await;
    assert_eq!((got.payload.as_ref(), got.qos, got.retain), (b"zero".as_ref(), QoS::AtMostOnce, true));
    assert_nothing_before_marker(&mut publisher, &mut sub, "r/q0").await;
    assert_eq!(broker.stats().retained_messages, 1);
    broker.stop();
}

/// `broker.stats().retained_messages` counts stored retained messages: one per topic, not
/// raised by a replacement [MQTT-3.3.1-5], lowered by a zero-length retained PUBLISH
/// [MQTT-3.3.1-10], untouched by non-retained messages.
#[tokio::test]
async fn retained_message_count_in_stats() {
    let broker = start_broker();
    assert_eq!(broker.stats().retained_messages, 0);
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    let steps: [(&str, &[u8], bool, usize); 7] = [
        ("c/1", b"a", true, 1),
        ("c/2", b"b", true, 2),
        ("c/1", b"c", true, 2),
        ("c/3", b"d", false, 2),
        ("c/1", b"", true, 1),
        ("c/1", b"", true, 1),
        ("c/2", b"", true, 0),
    ];
    for (t, payload, retain, count) in steps {
        publisher.publish(t, payload, QoS::AtLeastOnce, retain).await;
        publisher.router_sync().await;
        assert_eq!(broker.stats().retained_messages, count, "after {t} {payload:?} retain={retain}");
    }
    broker.stop();
}
