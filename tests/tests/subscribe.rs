//! SUBSCRIBE and UNSUBSCRIBE end to end (MQTT 3.1.1 sections 3.8 to 3.11) and topic matching
//! with wildcards (section 4.7).
//!
//! The `$` rule [MQTT-4.7.2-1] cannot be checked here: clients cannot publish to `$` topics
//! (publish.rs checks that they are not routed) and the broker itself publishes none yet. It is
//! covered by the router's unit tests `dollar_topics_are_not_matched_by_leading_wildcards`
//! (broker/src/router/subscriptions.rs) and `wildcards_and_dollar_topics`
//! (broker/src/router/retained.rs).

use amqtt_tests::*;

use SubscribeReturnCode::{Failure, Success};

/// The topics of the messages `client` receives before one on `marker`, acknowledging each.
async fn topics_until(client: &mut TestClient, marker: &str) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        let got = client.recv_publish().await;
        client.ack(&got).await;
        if topic(&got) == marker {
            return topics;
        }
        topics.push(topic(&got).to_string());
    }
}

/// For each `(filter, expected topics)`: a client subscribed to `filter` (and to a marker topic)
/// receives exactly the expected ones, in publication order, of `topics` published by one client.
async fn check_matching(broker: &RunningBroker, topics: &[&str], cases: &[(&str, &[&str])]) {
    const MARKER: &str = "zz/end/marker";
    let mut subs = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let (mut sub, _) = TestClient::connect(addr(broker), &format!("match{i}"), true).await;
        let codes = sub.subscribe(&[(filter, QoS::AtMostOnce), (MARKER, QoS::AtMostOnce)]).await;
        assert_eq!(codes, vec![Success(QoS::AtMostOnce); 2], "subscription to {filter:?}");
        subs.push(sub);
    }
    let (mut publisher, _) = TestClient::connect(addr(broker), "match-pub", true).await;
    for t in topics {
        publisher.publish(t, t.as_bytes(), QoS::AtLeastOnce, false).await;
    }
    publisher.publish(MARKER, b"marker", QoS::AtLeastOnce, false).await;
    for ((filter, expected), sub) in cases.iter().zip(&mut subs) {
        assert_eq!(topics_until(sub, MARKER).await, *expected, "topics matched by {filter:?}");
    }
}

/// [MQTT-3.8.4-1] a SUBSCRIBE is answered by a SUBACK with [MQTT-3.8.4-2] the same packet id,
/// [MQTT-3.8.4-5] one return code per filter, [MQTT-3.9.3-1] in the order of the filters, each
/// granting the requested QoS; [MQTT-3.8.4-4] every filter of the packet is a subscription of
/// its own, delivering at its granted QoS.
#[tokio::test]
async fn suback_has_one_code_per_filter_in_order_with_the_same_packet_id() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    let requested =
        [("s/2", QoS::ExactlyOnce), ("s/0", QoS::AtMostOnce), ("s/1", QoS::AtLeastOnce), ("t/#", QoS::ExactlyOnce)];
    let filters =
        requested.iter().map(|&(filter, qos)| SubscribeFilter { filter: ByteString::from(filter), qos }).collect();
    sub.send(Subscribe { pkid: 0xBEEF, filters }).await;
    let expected_codes = requested.iter().map(|&(_, qos)| Success(qos)).collect();
    assert_eq!(sub.recv().await, Packet::SubAck(SubAck { pkid: 0xBEEF, return_codes: expected_codes }));

    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for (t, granted) in
        [("s/2", QoS::ExactlyOnce), ("s/0", QoS::AtMostOnce), ("s/1", QoS::AtLeastOnce), ("t/x", QoS::ExactlyOnce)]
    {
        publisher.publish(t, b"m", QoS::ExactlyOnce, false).await;
        let got = sub.recv_publish().await;
        assert_eq!((topic(&got), got.qos), (t, granted));
        sub.ack(&got).await;
    }
    // A single-filter SUBSCRIBE grants each QoS as requested, too.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        assert_eq!(sub.subscribe(&[(&format!("g/{}", qos as u8), qos)]).await, vec![Success(qos)]);
    }
    broker.stop();
}

/// [MQTT-3.8.4-3] a SUBSCRIBE with a filter identical to an existing subscription replaces it:
/// messages then come at the new QoS (raised or lowered), and once, not once per SUBSCRIBE.
#[tokio::test]
async fn resubscribing_replaces_the_qos_and_delivers_once() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for granted in [QoS::AtMostOnce, QoS::ExactlyOnce, QoS::AtLeastOnce] {
        assert_eq!(sub.subscribe(&[("re/t", granted)]).await, vec![Success(granted)]);
        publisher.publish("re/t", b"m", QoS::ExactlyOnce, false).await;
        let got = sub.recv_publish().await;
        assert_eq!((got.payload.as_ref(), got.qos), (b"m".as_ref(), granted));
        sub.ack(&got).await;
        assert_nothing_before_marker(&mut publisher, &mut sub, "re/t").await;
    }
    broker.stop();
}

/// `max-subscriptions-per-client: 2`: the third new filter of a SUBSCRIBE is refused with 0x80
/// [MQTT-3.8.4-5 allows a failure code per filter] and really receives nothing, the others
/// work; re-subscribing to a filter already held is still granted [MQTT-3.8.4-3]; after an
/// UNSUBSCRIBE frees a place a new filter is granted again.
#[tokio::test]
async fn max_subscriptions_per_client_refuses_extra_filters() {
    let broker = start_broker_with("max-subscriptions-per-client: 2\n");
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    let codes = sub.subscribe(&[("l/a", QoS::AtLeastOnce), ("l/b", QoS::AtLeastOnce), ("l/c", QoS::AtLeastOnce)]).await;
    assert_eq!(codes, vec![Success(QoS::AtLeastOnce), Success(QoS::AtLeastOnce), Failure]);

    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("l/c", b"refused", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "l/a").await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "l/b").await;

    let codes = sub.subscribe(&[("l/a", QoS::ExactlyOnce), ("l/d", QoS::AtMostOnce)]).await;
    assert_eq!(codes, vec![Success(QoS::ExactlyOnce), Failure], "an existing filter is replaced, a new one refused");
    publisher.publish("l/a", b"upgraded", QoS::ExactlyOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!((got.payload.as_ref(), got.qos), (b"upgraded".as_ref(), QoS::ExactlyOnce));
    sub.ack(&got).await;

    sub.unsubscribe(&["l/b"]).await;
    assert_eq!(sub.subscribe(&[("l/c", QoS::AtLeastOnce)]).await, vec![Success(QoS::AtLeastOnce)]);
    round_trip(&mut publisher, &mut sub, "l/c", b"now").await;
    broker.stop();
}

/// [MQTT-3.10.4-4] an UNSUBSCRIBE is answered by an UNSUBACK with the same packet id,
/// [MQTT-3.10.4-5] even when none of its filters was subscribed.
#[tokio::test]
async fn unsuback_has_the_same_packet_id_even_for_unknown_filters() {
    let broker = start_broker();
    let (mut client, _) = TestClient::connect(addr(&broker), "c", true).await;
    client
        .send(Unsubscribe { pkid: 0x7777, filters: vec![ByteString::from("never/subscribed"), ByteString::from("#")] })
        .await;
    assert_eq!(client.recv().await, Packet::UnsubAck(UnsubAck { pkid: 0x7777 }));
    client.subscribe(&[("u/t", QoS::AtLeastOnce)]).await;
    client.send(Unsubscribe { pkid: 1, filters: vec![ByteString::from("u/t")] }).await;
    assert_eq!(client.recv().await, Packet::UnsubAck(UnsubAck { pkid: 1 }));
    client.send(Unsubscribe { pkid: 2, filters: vec![ByteString::from("u/t")] }).await;
    assert_eq!(client.recv().await, Packet::UnsubAck(UnsubAck { pkid: 2 }), "second UNSUBSCRIBE of the same filter");
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-3.10.4-2] after UNSUBSCRIBE the broker adds no new messages for the removed filters,
/// [MQTT-3.10.4-6] each filter of a multi-filter UNSUBSCRIBE is handled, and the client's other
/// subscriptions keep delivering.
#[tokio::test]
async fn unsubscribe_stops_delivery_on_those_filters_only() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(
        addr(&broker),
        &[("u/a", QoS::AtLeastOnce), ("u/b", QoS::AtLeastOnce), ("u/+/c", QoS::AtLeastOnce)],
    )
    .await;
    publisher.publish("u/x/c", b"before", QoS::AtLeastOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!(got.payload.as_ref(), b"before");
    sub.ack(&got).await;

    sub.unsubscribe(&["u/a", "u/+/c"]).await;
    publisher.publish("u/a", b"gone", QoS::AtLeastOnce, false).await;
    publisher.publish("u/x/c", b"gone", QoS::AtMostOnce, false).await;
    publisher.publish("u/y/c", b"gone", QoS::ExactlyOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "u/b").await;
    broker.stop();
}

/// [MQTT-3.10.4-1] UNSUBSCRIBE filters are compared character by character with the
/// subscribed ones: `a/+`, `a/#`, `#`, `A/b` or `a/b/` do not remove a subscription to `a/b`;
/// `a/b` does.
#[tokio::test]
async fn unsubscribe_compares_filters_character_by_character() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    sub.subscribe(&[("a/b", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)]).await;
    sub.unsubscribe(&["a/+", "a/#", "#", "A/b", "a/b/", "/a/b"]).await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    round_trip(&mut publisher, &mut sub, "a/b", b"still").await;

    // With `a/+` added then removed, `a/b` stays, once.
    sub.subscribe(&[("a/+", QoS::AtLeastOnce)]).await;
    sub.unsubscribe(&["a/+"]).await;
    publisher.publish("a/b", b"once", QoS::AtLeastOnce, false).await;
    publisher.publish("a/c", b"not a/b", QoS::AtLeastOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!((topic(&got), got.payload.as_ref()), ("a/b", b"once".as_ref()));
    sub.ack(&got).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "marker").await;

    sub.unsubscribe(&["a/b"]).await;
    publisher.publish("a/b", b"gone", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "marker").await;
    broker.stop();
}

/// Wildcards end to end (section 4.7.1, [MQTT-4.7.1-2], [MQTT-4.7.1-3]): `sport/tennis/#`
/// matches `sport/tennis` and everything below it; `sport/+` matches `sport/` but not `sport`;
/// `+/+` and `/+` match `/finance`, `+` does not; empty levels are levels.
#[tokio::test]
async fn wildcards_match_as_specified() {
    let broker = start_broker();
    let topics = [
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennisx",
        "sport/tennis/",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "/finance",
        "finance",
        "/",
    ];
    let cases: &[(&str, &[&str])] = &[
        ("sport/tennis/#", &["sport/tennis", "sport/tennis/", "sport/tennis/player1", "sport/tennis/player1/ranking"]),
        ("sport/tennis/+", &["sport/tennis/", "sport/tennis/player1"]),
        ("sport/+", &["sport/", "sport/tennis", "sport/tennisx"]),
        (
            "sport/#",
            &[
                "sport",
                "sport/",
                "sport/tennis",
                "sport/tennisx",
                "sport/tennis/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
            ],
        ),
        ("sport/+/player1", &["sport/tennis/player1"]),
        ("+/tennis/#", &["sport/tennis", "sport/tennis/", "sport/tennis/player1", "sport/tennis/player1/ranking"]),
        ("+/+", &["sport/", "sport/tennis", "sport/tennisx", "/finance", "/"]),
        ("/+", &["/finance", "/"]),
        ("+", &["sport", "finance"]),
        ("+/+/+", &["sport/tennis/", "sport/tennis/player1"]),
        ("#", &topics),
        ("sport/tennis", &["sport/tennis"]),
    ];
    check_matching(&broker, &topics, cases).await;
    broker.stop();
}

/// A subscription to `$SYS/#` is accepted (clients may subscribe to `$` topics, section 4.7.2);
/// the matching rule itself [MQTT-4.7.2-1] is covered by the router's unit tests (see the top
/// of this file).
#[tokio::test]
async fn dollar_filters_can_be_subscribed() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", true).await;
    let codes = sub.subscribe(&[("$SYS/#", QoS::AtLeastOnce), ("$SYS/monitor/+", QoS::AtMostOnce)]).await;
    assert_eq!(codes, vec![Success(QoS::AtLeastOnce), Success(QoS::AtMostOnce)]);
    broker.stop();
}

/// Topic names and filters are case sensitive (section 4.7.3): `Case/Topic` and `CASE/+` do not
/// match `case/topic` or `Case/topic`.
#[tokio::test]
async fn topics_and_filters_are_case_sensitive() {
    let broker = start_broker();
    let topics = ["case/topic", "Case/topic", "CASE/x", "Case/Topic", "case/TOPIC"];
    let cases: &[(&str, &[&str])] = &[
        ("Case/Topic", &["Case/Topic"]),
        ("CASE/+", &["CASE/x"]),
        ("case/#", &["case/topic", "case/TOPIC"]),
        ("+/topic", &["case/topic", "Case/topic"]),
    ];
    check_matching(&broker, &topics, cases).await;
    broker.stop();
}

/// Topic levels may hold spaces and any Unicode character (section 4.7.3, [MQTT-1.5.3]): they
/// match literally and through wildcards, and leading or trailing spaces make distinct topics.
#[tokio::test]
async fn topics_with_spaces_and_unicode_work() {
    let broker = start_broker();
    let topics = ["café bar/😀/x y", "cafe bar/😀/x y", "café bar/😀/x y ", " café bar/😀/x y", "町/温度", "町/温度/2"];
    let cases: &[(&str, &[&str])] = &[
        ("café bar/😀/x y", &["café bar/😀/x y"]),
        ("+/😀/#", &["café bar/😀/x y", "cafe bar/😀/x y", "café bar/😀/x y ", " café bar/😀/x y"]),
        ("café bar/+/+", &["café bar/😀/x y", "café bar/😀/x y "]),
        ("町/+", &["町/温度"]),
        ("町/#", &["町/温度", "町/温度/2"]),
    ];
    check_matching(&broker, &topics, cases).await;
    broker.stop();
}

/// [MQTT-3.10.4-3] QoS 1 and QoS 2 deliveries already started when the client unsubscribes are
/// completed: after the UNSUBACK the broker still answers the PUBREC with PUBREL and accepts the
/// PUBCOMP and PUBACK, and nothing new arrives afterwards ([MQTT-3.10.4-2]): no message on the
/// removed filter, and, since the session is persistent, no redelivery of the two messages on
/// reconnecting [MQTT-4.4.0-1], which proves the broker considers both flows complete.
#[tokio::test]
async fn deliveries_in_flight_complete_after_unsubscribe() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "sub", false).await;
    let filters = [("inflight/t", QoS::ExactlyOnce), ("marker", QoS::AtLeastOnce)];
    assert_eq!(sub.subscribe(&filters).await, [Success(QoS::ExactlyOnce), Success(QoS::AtLeastOnce)]);
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("inflight/t", b"two", QoS::ExactlyOnce, false).await;
    publisher.publish("inflight/t", b"one", QoS::AtLeastOnce, false).await;

    let q2 = sub.recv_publish().await;
    assert_eq!((q2.qos, q2.payload.as_ref()), (QoS::ExactlyOnce, b"two".as_ref()));
    let q1 = sub.recv_publish().await;
    assert_eq!((q1.qos, q1.payload.as_ref()), (QoS::AtLeastOnce, b"one".as_ref()));

    // Both flows are open when the subscription goes; the UNSUBACK must be the next packet.
    sub.unsubscribe(&["inflight/t"]).await;
    sub.send(PubRec { pkid: q2.pkid }).await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel { pkid: q2.pkid }), "QoS 2 flow not completed");
    sub.send(PubComp { pkid: q2.pkid }).await;
    sub.send(PubAck { pkid: q1.pkid }).await;

    publisher.publish("inflight/t", b"after", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "marker").await;

    sub.disconnect().await;
    let (mut sub, session_present) = TestClient::connect(addr(&broker), "sub", false).await;
    assert!(session_present, "the persistent session must be resumed");
    assert_nothing_before_marker(&mut publisher, &mut sub, "marker").await;
    broker.stop();
}
