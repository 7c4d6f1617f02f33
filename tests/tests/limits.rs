//! The broker's limits (`max-packet-size`, `connect-timeout`, `max-inflight-messages`,
//! `max-queued-messages`, `max-subscriptions-per-client`, `max-topic-length`,
//! `max-topic-levels`), one test each over real sockets: what a client exceeding the limit gets,
//! the counter that records it (`broker.stats()`), and that the other clients are served as
//! before. The last test runs the `amqtt` binary to check what the log says, and how often.

use std::collections::VecDeque;

use amqtt_tests::broker_process::BrokerProcess;
use amqtt_tests::raw::{encode, field, fixed_header};
use amqtt_tests::*;

/// The next PUBLISH to `client`, acknowledged.
async fn recv_acked(client: &mut TestClient) -> Publish {
    let publish = client.recv_publish().await;
    client.ack(&publish).await;
    publish
}

/// A CONNECT (clean session) whose will is published to `will_topic`.
fn connect_with_will(client_id: &str, will_topic: &str) -> Connect {
    Connect { will: Some(last_will(will_topic, b"gone", QoS::AtLeastOnce, false)), ..connect_packet(client_id, true) }
}

/// A QoS 0 PUBLISH to `topic`, as bytes.
fn publish_bytes(topic: &str) -> Vec<u8> {
    encode(publish_packet(topic, b"payload", QoS::AtMostOnce, false, 0))
}

/// `max-packet-size` (default 1 MiB): a PUBLISH whose fixed header announces 10 MiB closes the
/// connection on the header alone; no payload byte is ever sent, so the broker cannot have
/// waited for (or buffered) it. The same before CONNECT. Both are counted in
/// `packets_too_large` (and, as before that counter existed, in `protocol_errors`).
#[tokio::test]
async fn packet_announcing_10_mib_is_refused_from_its_header() {
    assert_eq!(Config::default().max_packet_size, 1024 * 1024, "documented default");
    let mut bystanders = Bystanders::start("").await;
    const TEN_MIB: usize = 10 * 1024 * 1024;

    let (mut offender, _) = TestClient::connect(bystanders.addr(), "offender", true).await;
    offender.send_bytes(&fixed_header(0x30, TEN_MIB)).await;
    offender.expect_closed().await;
    let stats = bystanders.stats();
    assert_eq!((stats.packets_too_large, stats.protocol_errors), (1, 1));

    // The first packet of a connection too: a CONNECT header announcing 10 MiB.
    let mut early = TestClient::connect_raw(bystanders.addr()).await;
    early.send_bytes(&fixed_header(0x10, TEN_MIB)).await;
    early.expect_closed().await;
    assert_eq!(bystanders.stats().packets_too_large, 2);

    // Exactly the limit still goes through.
    let topic = "ok/big";
    // 1 byte of packet type, 3 of remaining length.
    let payload = vec![b'p'; 1024 * 1024 - 4 - field(topic.as_bytes()).len()];
    let packet = encode(publish_packet(topic, &payload, QoS::AtMostOnce, false, 0));
    assert_eq!(packet.len(), 1024 * 1024);
    bystanders.publisher.send_bytes(&packet).await;
    assert_eq!(bystanders.sub.recv_publish().await.payload.len(), payload.len());
    bystanders.still_served().await;
    assert_eq!(bystanders.stats().packets_too_large, 2);
    bystanders.stop();
}

/// `connect-timeout`: a connection that sends nothing, and one that sends half a CONNECT, are
/// closed once it has passed and counted in `connect_timeouts`; a client that connected in time
/// is not affected.
#[tokio::test]
async fn connect_timeout_closes_silent_and_half_sent_connects() {
    let mut bystanders = Bystanders::start("connect-timeout: 0.3\n").await;
    let mut silent = TestClient::connect_raw(bystanders.addr()).await;
    let mut half = TestClient::connect_raw(bystanders.addr()).await;
    let connect = encode(connect_packet("half", true));
    half.send_bytes(&connect[..connect.len() / 2]).await;
    silent.expect_closed().await;
    half.expect_closed().await;
    let stats = bystanders.stats();
    assert_eq!((stats.connect_timeouts, stats.protocol_errors), (2, 0));
    bystanders.still_served().await;
    assert_eq!(bystanders.stats().connect_timeouts, 2, "connected clients are not timed out");
    bystanders.stop();
}

/// `max-inflight-messages: 2`: of 5 QoS 1 messages to a subscriber that does not acknowledge,
/// 2 are sent (the in-flight gauge says 2) and 3 wait in its queue; each PUBACK lets one more
/// through. A client cannot exceed this limit (the broker keeps it), so it has no counter.
#[tokio::test]
async fn max_inflight_messages_bounds_unacknowledged_deliveries() {
    let mut bystanders = Bystanders::start("max-inflight-messages: 2\n").await;
    let mut slow = subscriber(bystanders.addr(), "slow", &[("w/#", QoS::AtLeastOnce)]).await;
    for i in 0..5 {
        bystanders.publisher.publish("w/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }
    let mut outstanding: VecDeque<Publish> = VecDeque::new();
    for i in 0..2 {
        let publish = slow.recv_publish().await;
        assert_eq!(text(&publish), format!("m{i}"));
        outstanding.push_back(publish);
    }
    // Answered through the router after what it routed to `slow`: a third message would come
    // first (and fail the SUBSCRIBE); by then the gauges include everything `slow` was sent.
    slow.subscribe(&[("barrier/1", QoS::AtMostOnce)]).await;
    let stats = bystanders.stats();
    assert_eq!((stats.inflight_out, stats.queued), (2, 3));

    for i in 2..5 {
        slow.ack(&outstanding.pop_front().unwrap()).await;
        let publish = slow.recv_publish().await;
        assert_eq!(text(&publish), format!("m{i}"), "one more per PUBACK, in order");
        outstanding.push_back(publish);
    }
    for publish in outstanding {
        slow.ack(&publish).await;
    }
    assert_nothing_before_marker(&mut bystanders.publisher, &mut slow, "w/marker").await;
    assert_eq!(bystanders.stats().messages_dropped, 0);
    bystanders.still_served().await;
    bystanders.stop();
}

/// `max-queued-messages: 5`: a persistent subscriber away while 8 QoS 1 messages are published
/// for it keeps the first 5 and the other 3 are counted in `messages_dropped`; the rest of the
/// broker goes on as usual.
#[tokio::test]
async fn max_queued_messages_drops_and_counts_the_overflow() {
    let mut bystanders = Bystanders::start("max-queued-messages: 5\n").await;
    let (mut away, _) = TestClient::connect(bystanders.addr(), "away", false).await;
    away.subscribe(&[("q/#", QoS::AtLeastOnce)]).await;
    away.disconnect().await;
    for i in 0..8 {
        bystanders.publisher.publish("q/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }
    let (mut away, present) = TestClient::connect(bystanders.addr(), "away", false).await;
    assert!(present);
    // Its queue was handed over before CONNACK: the drops are counted by now.
    assert_eq!(bystanders.stats().messages_dropped, 3);
    for i in 0..5 {
        let publish = away.recv_publish().await;
        assert_eq!(text(&publish), format!("m{i}"));
        away.ack(&publish).await;
    }
    assert_nothing_before_marker(&mut bystanders.publisher, &mut away, "q/marker").await;
    assert_eq!(bystanders.stats().messages_dropped, 3);
    bystanders.still_served().await;
    bystanders.stop();
}

/// `max-subscriptions-per-client: 2`: new filters beyond 2 get 0x80 and are counted in
/// `subscriptions_refused` (one per filter); a filter already held can be subscribed again, and
/// a refused filter receives nothing.
#[tokio::test]
async fn max_subscriptions_per_client_refuses_and_counts_extra_filters() {
    let mut bystanders = Bystanders::start("max-subscriptions-per-client: 2\n").await;
    let (mut client, _) = TestClient::connect(bystanders.addr(), "collector", true).await;
    let ok = SubscribeReturnCode::Success(QoS::AtLeastOnce);
    let codes =
        client.subscribe(&[("s/a", QoS::AtLeastOnce), ("s/b", QoS::AtLeastOnce), ("s/c", QoS::AtLeastOnce)]).await;
    assert_eq!(codes, [ok, ok, SubscribeReturnCode::Failure]);
    assert_eq!(bystanders.stats().subscriptions_refused, 1);
    let codes =
        client.subscribe(&[("s/a", QoS::AtLeastOnce), ("s/d", QoS::AtLeastOnce), ("s/e", QoS::AtLeastOnce)]).await;
    assert_eq!(codes, [ok, SubscribeReturnCode::Failure, SubscribeReturnCode::Failure]);
    assert_eq!(bystanders.stats().subscriptions_refused, 3);

    bystanders.publisher.publish("s/c", b"refused filter", QoS::AtLeastOnce, false).await;
    assert_nothing_before_marker(&mut bystanders.publisher, &mut client, "s/a").await;
    // 2 for `collector`, 1 for the bystander subscriber.
    assert_eq!(bystanders.stats().subscriptions, 3);
    bystanders.still_served().await;
    bystanders.stop();
}

/// `max-topic-length: 16`: a SUBSCRIBE filter of 17 bytes gets 0x80 (the others of the packet
/// are granted) and unsubscribing it is a no-op; a PUBLISH to a 17-byte topic closes the
/// connection without the message being routed; a CONNECT whose will topic has 17 bytes is
/// closed before CONNACK. 16 bytes is fine. Each refusal counts in `topics_too_long`.
#[tokio::test]
async fn max_topic_length_refuses_filters_and_closes_publishers() {
    let mut bystanders = Bystanders::start("max-topic-length: 16\n").await;
    let (longest, too_long) = ("ok/0123456789abc", "ok/0123456789abcd");
    let (longest_filter, too_long_filter) = ("s/0123456789abc/", "s/0123456789abc/#");
    assert_eq!((longest.len(), too_long.len(), longest_filter.len(), too_long_filter.len()), (16, 17, 16, 17));

    let (mut client, _) = TestClient::connect(bystanders.addr(), "topics", true).await;
    let codes = client.subscribe(&[(longest_filter, QoS::AtLeastOnce), (too_long_filter, QoS::AtLeastOnce)]).await;
    assert_eq!(codes, [SubscribeReturnCode::Success(QoS::AtLeastOnce), SubscribeReturnCode::Failure]);
    assert_eq!(bystanders.stats().topics_too_long, 1);
    client.unsubscribe(&[too_long_filter]).await;
    assert_eq!(bystanders.stats().subscriptions, 2, "the bystander's and `topics`' 16-byte filter");

    client.publish(longest, b"fits", QoS::AtLeastOnce, false).await;
    assert_eq!(text(&recv_acked(&mut bystanders.sub).await), "fits");

    client.send_bytes(&publish_bytes(too_long)).await;
    client.expect_closed().await;
    assert_eq!(bystanders.stats().topics_too_long, 2);

    let mut will = TestClient::connect_raw(bystanders.addr()).await;
    will.send(connect_with_will("will", too_long)).await;
    will.expect_closed().await;
    let stats = bystanders.stats();
    assert_eq!((stats.topics_too_long, stats.topic_levels_exceeded, stats.protocol_errors), (3, 0, 0));
    bystanders.still_served().await;
    bystanders.stop();
}

/// `max-topic-levels: 4`, enforced like the length: a 5-level filter gets 0x80, a PUBLISH to a
/// 5-level topic and a CONNECT with a 5-level will topic are closed; 4 levels are fine. Counted
/// in `topic_levels_exceeded`.
#[tokio::test]
async fn max_topic_levels_refuses_filters_and_closes_publishers() {
    let mut bystanders = Bystanders::start("max-topic-levels: 4\n").await;
    let (mut client, _) = TestClient::connect(bystanders.addr(), "levels", true).await;
    let codes = client
        .subscribe(&[("s/1/2/#", QoS::AtLeastOnce), ("s/1/2/3/#", QoS::AtLeastOnce), ("s/+/+/+", QoS::AtLeastOnce)])
        .await;
    let ok = SubscribeReturnCode::Success(QoS::AtLeastOnce);
    assert_eq!(codes, [ok, SubscribeReturnCode::Failure, ok]);
    assert_eq!(bystanders.stats().topic_levels_exceeded, 1);

    client.publish("ok/1/2/3", b"four levels", QoS::AtLeastOnce, false).await;
    assert_eq!(text(&recv_acked(&mut bystanders.sub).await), "four levels");

    // Empty levels count too.
    client.send_bytes(&publish_bytes("ok/1/2//")).await;
    client.expect_closed().await;
    assert_eq!(bystanders.stats().topic_levels_exceeded, 2);

    let mut will = TestClient::connect_raw(bystanders.addr()).await;
    will.send(connect_with_will("will", "ok/1/2/3/4")).await;
    will.expect_closed().await;
    let stats = bystanders.stats();
    assert_eq!((stats.topic_levels_exceeded, stats.topics_too_long, stats.protocol_errors), (3, 0, 0));
    bystanders.still_served().await;
    bystanders.stop();
}

/// What a user sees in the log of the `amqtt` binary: each limit exceeded is one warning naming
/// the limit, the client id and the peer address; a burst of 15 messages dropped from a full
/// queue is one warning when it starts and one when it ends, not one per message.
#[tokio::test]
async fn limits_are_logged_once_with_client_id_and_peer() {
    let dir = std::env::temp_dir().join(format!("amqtt-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("amqtt.yaml");
    std::fs::write(
        &config,
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\nmax-queued-messages: 5\nmax-topic-length: 16\n\
         max-subscriptions-per-client: 1\nplugins: [auth_anonymous]\n",
    )
    .unwrap();
    let mut broker = BrokerProcess::start(&config);
    let addr = broker.addr().await;

    let (mut away, _) = TestClient::connect(addr, "away", false).await;
    away.subscribe(&[("q/#", QoS::AtLeastOnce)]).await;
    // Two filters over the subscription limit in one SUBSCRIBE: one warning.
    let codes = away.subscribe(&[("x/1", QoS::AtMostOnce), ("x/2", QoS::AtMostOnce)]).await;
    assert_eq!(codes, [SubscribeReturnCode::Failure, SubscribeReturnCode::Failure]);
    away.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr, "publisher", true).await;
    for i in 0..20 {
        publisher.publish("q/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }
    // Taking the session over ends it, and with it the burst of drops (after every delivery
    // to it, which came first in its mailbox).
    let (mut away, _) = TestClient::connect(addr, "away", false).await;
    for _ in 0..5 {
        let publish = away.recv_publish().await;
        away.ack(&publish).await;
    }
    publisher.send_bytes(&publish_bytes("q/0123456789abcdef")).await;
    publisher.expect_closed().await;
    broker.log_line("the topic warning", |line| line.contains("max-topic-length")).await;
    away.disconnect().await;
    let (_, log) = broker.terminate().await;
    std::fs::remove_dir_all(&dir).ok();

    let warnings = |what: &str| -> Vec<&str> {
        log.lines().filter(|line| line.contains("WARN") && line.contains(what)).collect::<Vec<_>>()
    };
    let peer_and_id = |line: &str, client_id: &str| {
        assert!(line.contains(&format!("client_id={client_id}")), "no client id {client_id} in {line:?}");
        assert!(line.contains("peer=127.0.0.1:"), "no peer address in {line:?}");
    };
    let started = warnings("dropping messages until it drains");
    assert_eq!(started.len(), 1, "one warning per burst, not per message:\n{log}");
    peer_and_id(started[0], "away");
    let ended = warnings("end of a burst");
    assert_eq!(ended.len(), 1, "{log}");
    assert!(ended[0].contains("dropped=15"), "{}", ended[0]);
    let subscriptions = warnings("max-subscriptions-per-client");
    assert_eq!(subscriptions.len(), 1, "one warning per SUBSCRIBE:\n{log}");
    assert!(subscriptions[0].contains("refused=2"), "{}", subscriptions[0]);
    peer_and_id(subscriptions[0], "away");
    let topic = warnings("max-topic-length");
    assert_eq!(topic.len(), 1, "{log}");
    peer_and_id(topic[0], "publisher");
}
