//! PUBLISH end to end: the QoS 0/1/2 flows between a publisher and the broker and between the
//! broker and a subscriber, exactly-once delivery, the delivery QoS, message order, payload
//! sizes, fan-out and `$` topics (MQTT 3.1.1 sections 3.3, 4.3, 4.6).

use std::collections::HashSet;

use amqtt_tests::*;

/// Sends `packets` back to back, then completes every publisher-side flow: expects the PUBACKs
/// and PUBRECs in the order the PUBLISH packets were sent [MQTT-4.6.0-2, MQTT-4.6.0-3], answers
/// each PUBREC with PUBREL and expects the PUBCOMPs.
async fn publish_pipelined(client: &mut TestClient, packets: &[Publish]) {
    for publish in packets {
        client.send(publish.clone()).await;
    }
    let acked: Vec<&Publish> = packets.iter().filter(|p| p.qos != QoS::AtMostOnce).collect();
    let mut pubcomps = 0;
    let mut next_ack = 0;
    while next_ack < acked.len() || pubcomps < acked.iter().filter(|p| p.qos == QoS::ExactlyOnce).count() {
        match client.recv().await {
            Packet::PubAck(PubAck { pkid }) => {
                let expected = acked.get(next_ack).expect("more acknowledgements than messages");
                assert_eq!(
                    (expected.qos, expected.pkid),
                    (QoS::AtLeastOnce, pkid),
                    "PUBACK out of order [MQTT-4.6.0-2]"
                );
                next_ack += 1;
            }
            Packet::PubRec(PubRec { pkid }) => {
                let expected = acked.get(next_ack).expect("more acknowledgements than messages");
                assert_eq!(
                    (expected.qos, expected.pkid),
                    (QoS::ExactlyOnce, pkid),
                    "PUBREC out of order [MQTT-4.6.0-3]"
                );
                next_ack += 1;
                client.send(PubRel { pkid }).await;
            }
            Packet::PubComp(PubComp { .. }) => pubcomps += 1,
            other => panic!("expected an acknowledgement, got {other:?}"),
        }
    }
}

/// [MQTT-4.3.2-2] a QoS 1 PUBLISH is answered by a PUBACK with its packet id; [MQTT-4.3.3-2] a
/// QoS 2 PUBLISH by a PUBREC with its packet id, and the PUBREL by a PUBCOMP with the same id;
/// a QoS 0 PUBLISH gets no answer [MQTT-4.3.1].
#[tokio::test]
async fn publisher_to_broker_acknowledgements_carry_the_packet_id() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("ack/t", QoS::ExactlyOnce)]).await;

    // QoS 0: nothing comes back; the PINGRESP is the next packet.
    publisher.send(publish_packet("ack/t", b"q0", QoS::AtMostOnce, false, 0)).await;
    publisher.ping().await;

    for pkid in [1, 0x1234, 0xFFFF] {
        publisher.send(publish_packet("ack/t", b"q1", QoS::AtLeastOnce, false, pkid)).await;
        assert_eq!(publisher.recv().await, Packet::PubAck(PubAck { pkid }), "[MQTT-4.3.2-2]");
    }
    for pkid in [2, 0x4321, 0xFFFE] {
        publisher.send(publish_packet("ack/t", b"q2", QoS::ExactlyOnce, false, pkid)).await;
        assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid }), "[MQTT-4.3.3-2] PUBREC");
        publisher.send(PubRel { pkid }).await;
        assert_eq!(publisher.recv().await, Packet::PubComp(PubComp { pkid }), "[MQTT-4.3.3-2] PUBCOMP");
    }

    let got = sub.collect(7).await;
    let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_ref()).collect();
    assert_eq!(payloads, [&b"q0"[..], b"q1", b"q1", b"q1", b"q2", b"q2", b"q2"]);
    broker.stop();
}

/// The broker answers a PUBREL with a PUBCOMP even for a packet id it does not know
/// [MQTT-4.3.3-2], and keeps the connection open.
#[tokio::test]
async fn pubrel_for_unknown_packet_id_gets_pubcomp() {
    let broker = start_broker();
    let (mut client, _) = TestClient::connect(addr(&broker), "c", true).await;
    client.send(PubRel { pkid: 4242 }).await;
    assert_eq!(client.recv().await, Packet::PubComp(PubComp { pkid: 4242 }));
    client.ping().await;
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-2.3.1-1] a QoS 1 or 2 PUBLISH from the broker has a non-zero packet id, [MQTT-3.3.1-1]
/// DUP is 0 on its first delivery, and [MQTT-2.3.1-4] messages in flight together have distinct
/// packet ids.
#[tokio::test]
async fn broker_to_subscriber_packet_ids_and_dup() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("out/t", QoS::ExactlyOnce)]).await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher.publish("out/t", b"m", qos, false).await;
    }
    // Nothing acknowledged yet: all four are in flight at once.
    let mut ids = HashSet::new();
    for expected in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let got = sub.recv_publish().await;
        assert_eq!(got.qos, expected);
        assert_ne!(got.pkid, 0, "[MQTT-2.3.1-1] non-zero packet id");
        assert!(!got.dup, "[MQTT-3.3.1-1] DUP must be 0 on the first delivery");
        assert!(ids.insert(got.pkid), "[MQTT-2.3.1-4] packet id {} used twice while in flight", got.pkid);
    }
    broker.stop();
}

/// [MQTT-4.3.3-1] the broker's QoS 2 flow toward a subscriber: PUBLISH, the subscriber's PUBREC
/// is answered by a PUBREL with the same id, and the subscriber's PUBCOMP completes it. With an
/// in-flight window of one, the next message is only sent once the PUBCOMP released the window,
/// so a broker that did not complete the flow fails here.
#[tokio::test]
async fn qos2_flow_toward_subscriber_completes() {
    let broker = start_broker_with("max-inflight-messages: 1\n");
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("q2/t", QoS::ExactlyOnce)]).await;
    publisher.publish("q2/t", b"one", QoS::ExactlyOnce, false).await;
    publisher.publish("q2/t", b"two", QoS::ExactlyOnce, false).await;

    let first = sub.recv_publish().await;
    assert_eq!((first.qos, first.payload.as_ref()), (QoS::ExactlyOnce, b"one".as_ref()));
    sub.send(PubRec { pkid: first.pkid }).await;
    // The PUBREC is answered by a PUBREL with the same packet id; the window (one message) is
    // still taken, so the second message cannot come before it.
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel { pkid: first.pkid }));
    sub.send(PubComp { pkid: first.pkid }).await;

    let second = sub.recv_publish().await;
    assert_eq!((second.qos, second.payload.as_ref(), second.dup), (QoS::ExactlyOnce, b"two".as_ref(), false));
    sub.ack(&second).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "q2/t").await;
    broker.stop();
}

/// [MQTT-4.3.3-2] exactly once inbound: a QoS 2 PUBLISH sent again (DUP=1, same packet id)
/// before PUBREL is acknowledged with PUBREC again but not delivered twice; after PUBREL and
/// PUBCOMP the packet id is free, and a new PUBLISH with it is a new message that is delivered.
#[tokio::test]
async fn qos2_inbound_is_delivered_exactly_once() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("eo/t", QoS::ExactlyOnce)]).await;

    let pkid = 77;
    let mut publish = publish_packet("eo/t", b"first", QoS::ExactlyOnce, false, pkid);
    publisher.send(publish.clone()).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid }));
    publish.dup = true;
    publisher.send(publish).await;
    assert_eq!(
        publisher.recv().await,
        Packet::PubRec(PubRec { pkid }),
        "a re-sent QoS 2 PUBLISH is acknowledged again"
    );
    publisher.send(PubRel { pkid }).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(PubComp { pkid }));

    let got = sub.recv_publish().await;
    assert_eq!((topic(&got), got.payload.as_ref(), got.dup), ("eo/t", b"first".as_ref(), false));
    sub.ack(&got).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "eo/t").await;

    // The same packet id, after PUBCOMP: a new publication.
    publisher.send(publish_packet("eo/t", b"second", QoS::ExactlyOnce, false, pkid)).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(PubRec { pkid }));
    publisher.send(PubRel { pkid }).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(PubComp { pkid }));
    let got = sub.recv_publish().await;
    assert_eq!(got.payload.as_ref(), b"second", "a reused packet id after PUBCOMP is a new message");
    sub.ack(&got).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "eo/t").await;
    broker.stop();
}

/// [MQTT-3.8.4-6] a message is delivered at the lower of its published QoS and the QoS granted
/// to the subscription: all nine combinations.
#[tokio::test]
async fn delivery_qos_is_min_of_published_and_granted() {
    let broker = start_broker();
    let mut subs = Vec::new();
    for granted in QOS_ALL {
        let (mut sub, _) = TestClient::connect(addr(&broker), &format!("sub{}", granted as u8), true).await;
        assert_eq!(sub.subscribe(&[("min/t", granted)]).await, vec![SubscribeReturnCode::Success(granted)]);
        subs.push((granted, sub));
    }
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for published in QOS_ALL {
        publisher.publish("min/t", &[published as u8], published, false).await;
        for (granted, sub) in &mut subs {
            let got = sub.recv_publish().await;
            assert_eq!(got.payload.as_ref(), &[published as u8]);
            assert_eq!(got.qos, published.min(*granted), "published at {published:?}, granted {granted:?}");
            sub.ack(&got).await;
        }
    }
    broker.stop();
}

/// [MQTT-3.3.5-1] a client whose subscriptions overlap (`a/#` QoS 0, `a/b` QoS 2, `+/b` QoS 1)
/// receives a message to `a/b` once, at the highest QoS among them.
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let broker = start_broker();
    let filters = [("a/#", QoS::AtMostOnce), ("a/b", QoS::ExactlyOnce), ("+/b", QoS::AtLeastOnce)];
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &filters).await;
    publisher.publish("a/b", b"once", QoS::ExactlyOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!((topic(&got), got.payload.as_ref(), got.qos), ("a/b", b"once".as_ref(), QoS::ExactlyOnce));
    sub.ack(&got).await;
    // `a/marker` matches `a/#` only.
    assert_nothing_before_marker(&mut publisher, &mut sub, "a/marker").await;
    broker.stop();
}

/// [MQTT-4.6.0-2] the broker sends PUBACKs in the order of the PUBLISH packets, and
/// [MQTT-4.6.0-5, MQTT-4.6.0-6] delivers 200 QoS 1 messages of one topic, published without
/// waiting for each PUBACK, in the order they were published.
#[tokio::test]
async fn qos1_messages_arrive_in_order() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("order/q1", QoS::AtLeastOnce)]).await;
    let packets: Vec<Publish> = (1..=200u16)
        .map(|i| publish_packet("order/q1", i.to_string().as_bytes(), QoS::AtLeastOnce, false, i))
        .collect();
    publish_pipelined(&mut publisher, &packets).await;
    let got = sub.collect(200).await;
    let payloads: Vec<String> = got.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect();
    let expected: Vec<String> = (1..=200).map(|i: u16| i.to_string()).collect();
    assert_eq!(payloads, expected);
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce));
    broker.stop();
}

/// [MQTT-4.6.0-5, MQTT-4.6.0-6] 200 QoS 0 messages of one topic arrive in order.
#[tokio::test]
async fn qos0_messages_arrive_in_order() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("order/q0", QoS::AtMostOnce)]).await;
    for i in 1..=200u16 {
        publisher.send(publish_packet("order/q0", i.to_string().as_bytes(), QoS::AtMostOnce, false, 0)).await;
    }
    let got = sub.collect(200).await;
    let payloads: Vec<String> = got.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect();
    let expected: Vec<String> = (1..=200).map(|i: u16| i.to_string()).collect();
    assert_eq!(payloads, expected);
    broker.stop();
}

/// [MQTT-4.6.0-3] PUBRECs follow the order of the PUBLISH packets, and a mix of QoS 0, 1 and 2
/// messages on one topic, pipelined, reaches a QoS 2 subscriber in the published order, each at
/// its own QoS (the broker keeps one order for the topic across QoS levels).
#[tokio::test]
async fn mixed_qos_messages_arrive_in_order() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("order/mix", QoS::ExactlyOnce)]).await;
    let packets: Vec<Publish> = (1..=150u16)
        .map(|i| {
            let qos = QOS_ALL[usize::from(i) % 3];
            let pkid = if qos == QoS::AtMostOnce { 0 } else { i };
            publish_packet("order/mix", i.to_string().as_bytes(), qos, false, pkid)
        })
        .collect();
    publish_pipelined(&mut publisher, &packets).await;
    let got = sub.collect(packets.len()).await;
    let received: Vec<(String, QoS)> =
        got.iter().map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos)).collect();
    let expected: Vec<(String, QoS)> =
        packets.iter().map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos)).collect();
    assert_eq!(received, expected);
    broker.stop();
}

/// An empty payload and a 200 000 byte payload (below the default 1 MiB packet limit) pass
/// through intact [MQTT-3.3.3] (the payload is opaque and may be empty).
#[tokio::test]
async fn empty_and_large_payloads_pass_intact() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("size/t", QoS::AtLeastOnce)]).await;
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for payload in [Vec::new(), large] {
        publisher.publish("size/t", &payload, QoS::AtLeastOnce, false).await;
        let got = sub.recv_publish().await;
        assert_eq!(got.payload.len(), payload.len());
        assert!(got.payload.as_ref() == payload.as_slice(), "payload of {} bytes altered", payload.len());
        sub.ack(&got).await;
    }
    broker.stop();
}

/// Fan-out: every one of 50 subscribers of a topic receives the message [MQTT-3.3.5-1 applies
/// per subscription, so each client gets it once].
#[tokio::test]
async fn fan_out_to_fifty_subscribers() {
    let broker = start_broker();
    let mut subs = Vec::new();
    for i in 0..50 {
        let (mut sub, _) = TestClient::connect(addr(&broker), &format!("sub{i}"), true).await;
        sub.subscribe(&[("fan/t", QoS::AtLeastOnce)]).await;
        subs.push(sub);
    }
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    publisher.publish("fan/t", b"all", QoS::AtLeastOnce, false).await;
    for sub in &mut subs {
        let got = sub.recv_publish().await;
        assert_eq!((topic(&got), got.payload.as_ref(), got.qos), ("fan/t", b"all".as_ref(), QoS::AtLeastOnce));
        sub.ack(&got).await;
    }
    // Once each: the next message every subscriber gets is the marker.
    publisher.publish("fan/t", b"marker", QoS::AtLeastOnce, false).await;
    for sub in &mut subs {
        let got = sub.recv_publish().await;
        assert_eq!(got.payload.as_ref(), b"marker", "a second copy arrived: {got:?}");
        sub.ack(&got).await;
    }
    broker.stop();
}

/// Topics starting with `$` are reserved for the server [MQTT-4.7.2-1, section 4.7.2]: a client's
/// PUBLISH to `$SYS/fake` or `$x` is acknowledged (PUBACK, PUBREC/PUBCOMP) but not routed, so
/// `$SYS/#` and `$x` subscribers get nothing, and a retained one is not stored.
#[tokio::test]
async fn client_publish_to_dollar_topic_is_acknowledged_but_not_routed() {
    let broker = start_broker();
    // `subscriber_and_publisher` asserts that all three are granted.
    let filters = [("$SYS/#", QoS::AtLeastOnce), ("$x", QoS::AtLeastOnce), ("marker", QoS::AtLeastOnce)];
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &filters).await;
    // `publish` asserts the PUBACK / PUBREC-PUBREL-PUBCOMP flow.
    publisher.publish("$SYS/fake", b"no", QoS::AtLeastOnce, false).await;
    publisher.publish("$x", b"no", QoS::ExactlyOnce, false).await;
    publisher.publish("$x", b"no", QoS::AtMostOnce, true).await;
    publisher.publish("$SYS/fake", b"no", QoS::AtLeastOnce, true).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, "marker").await;

    // Nothing retained either: a later subscriber gets nothing, and the count stays at 0.
    let (mut late, _) = TestClient::connect(addr(&broker), "late", true).await;
    late.subscribe(&filters).await;
    assert_nothing_before_marker(&mut publisher, &mut late, "marker").await;
    assert_eq!(broker.stats().retained_messages, 0);
    broker.stop();
}

/// MQTT 3.1.1 has no "no local" option: a client subscribed to a topic receives its own
/// publications [MQTT-3.3.5-1: every matching subscription gets the message].
#[tokio::test]
async fn client_receives_its_own_publications() {
    let broker = start_broker();
    let (mut client, _) = TestClient::connect(addr(&broker), "self", true).await;
    client.subscribe(&[("self/t", QoS::AtLeastOnce)]).await;
    // Sent by hand: the PUBACK and the echoed PUBLISH may come in either order.
    client.send(publish_packet("self/t", b"echo", QoS::AtLeastOnce, false, 9)).await;
    let mut got_puback = false;
    let mut got_publish = None;
    while !got_puback || got_publish.is_none() {
        match client.recv().await {
            Packet::PubAck(PubAck { pkid: 9 }) if !got_puback => got_puback = true,
            Packet::Publish(publish) if got_publish.is_none() => got_publish = Some(publish),
            other => panic!("unexpected {other:?}"),
        }
    }
    let got = got_publish.unwrap();
    assert_eq!((topic(&got), got.payload.as_ref(), got.qos), ("self/t", b"echo".as_ref(), QoS::AtLeastOnce));
    client.ack(&got).await;
    client.disconnect().await;
    broker.stop();
}

/// [MQTT-1.5.3-3] a topic holding U+FEFF (bytes EF BB BF) keeps it: the filter is not stripped
/// (a message on the same topic without it does not match) and the subscriber receives the
/// topic name byte for byte as published, BOM included.
#[tokio::test]
async fn byte_order_mark_in_topic_is_not_stripped() {
    let broker = start_broker();
    let bom_topic = "\u{FEFF}bom/topic";
    assert_eq!(&bom_topic.as_bytes()[..3], [0xEF, 0xBB, 0xBF]);
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[(bom_topic, QoS::AtLeastOnce)]).await;
    // Without the BOM the topic is another one: were the filter stripped, this would arrive
    // first, since messages from one publisher arrive in order.
    publisher.publish("bom/topic", b"plain", QoS::AtLeastOnce, false).await;
    publisher.publish(bom_topic, b"bom", QoS::AtLeastOnce, false).await;
    let got = sub.recv_publish().await;
    assert_eq!(got.payload.as_ref(), b"bom", "the message without the BOM matched the BOM filter");
    assert_eq!(got.topic.as_bytes(), bom_topic.as_bytes(), "topic not byte-identical [MQTT-1.5.3-3]");
    sub.ack(&got).await;
    assert_nothing_before_marker(&mut publisher, &mut sub, bom_topic).await;
    broker.stop();
}

/// [MQTT-4.6.0-4] the broker sends its PUBRELs in the order the PUBRECs came in: a subscriber
/// holds three QoS 2 messages unanswered, then sends their PUBRECs in the order 3, 1, 2 (in
/// one write) and must receive the PUBRELs 3, 1, 2.
#[tokio::test]
async fn pubrels_follow_the_order_of_pubrecs() {
    let broker = start_broker();
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("rel/t", QoS::ExactlyOnce)]).await;
    for payload in [b"1", b"2", b"3"] {
        publisher.publish("rel/t", payload, QoS::ExactlyOnce, false).await;
    }
    let mut pkids = Vec::new();
    for payload in [b"1", b"2", b"3"] {
        let got = sub.recv_publish().await;
        assert_eq!((got.qos, got.payload.as_ref()), (QoS::ExactlyOnce, payload.as_ref()));
        pkids.push(got.pkid);
    }
    assert_eq!(pkids.iter().collect::<HashSet<_>>().len(), 3, "packet ids in flight must differ: {pkids:?}");

    let order = [pkids[2], pkids[0], pkids[1]];
    let bytes: Vec<u8> = order.iter().flat_map(|&pkid| raw::encode(PubRec { pkid })).collect();
    sub.send_bytes(&bytes).await;
    for pkid in order {
        assert_eq!(sub.recv().await, Packet::PubRel(PubRel { pkid }), "PUBRELs out of order [MQTT-4.6.0-4]");
    }
    for pkid in order {
        sub.send(PubComp { pkid }).await;
    }
    assert_nothing_before_marker(&mut publisher, &mut sub, "rel/t").await;
    broker.stop();
}
