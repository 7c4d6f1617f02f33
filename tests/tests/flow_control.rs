//! Flow control toward subscribers: the in-flight window of unacknowledged QoS 1/2 messages
//! (`max-inflight-messages`) and the bounded queue (`max-queued-messages`) that keeps a stalled
//! client from holding up the others.

use std::collections::VecDeque;

use amqtt_tests::raw::encode;
use amqtt_tests::*;

/// Receives the next message, checks it is `m{next}` with a packet id not in use, and keeps it
/// unacknowledged.
async fn receive_next(sub: &mut TestClient, next: &mut usize, outstanding: &mut VecDeque<Publish>) {
    let publish = sub.recv_publish().await;
    assert_eq!((text(&publish), publish.qos), (format!("m{next}").as_str(), QoS::AtLeastOnce), "order");
    assert!(outstanding.iter().all(|p| p.pkid != publish.pkid), "packet id in use [MQTT-2.3.1-2]");
    *next += 1;
    outstanding.push_back(publish);
}

/// Proves that no PUBLISH is on its way to `client` right now: a SUBSCRIBE is answered through
/// the router, after every message the router had already routed to `client`, so a PUBLISH
/// beyond the window would arrive before the SUBACK (and `subscribe` fails on it). The marker of
/// `assert_nothing_before_marker` cannot be used while the window is full.
async fn assert_nothing_before_suback(client: &mut TestClient, barrier: &str) {
    client.subscribe(&[(barrier, QoS::AtMostOnce)]).await;
}

/// [MQTT-4.4.0-1] [MQTT-4.6.0-2] [MQTT-4.6.0-3] with `max-inflight-messages: 3`, a subscriber
/// that does not acknowledge gets exactly 3 QoS 1 messages; each PUBACK lets exactly one more
/// through, and all 10 arrive in publication order (with fresh packet ids) once acknowledged.
#[tokio::test]
async fn inflight_window_limits_unacknowledged_messages() {
    let broker = start_broker_with("max-inflight-messages: 3\n");
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("w/#", QoS::AtLeastOnce)]).await;
    for i in 0..10 {
        publisher.publish("w/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce, false).await;
    }

    let mut next = 0;
    let mut outstanding = VecDeque::new();
    for _ in 0..3 {
        receive_next(&mut sub, &mut next, &mut outstanding).await;
    }
    assert_nothing_before_suback(&mut sub, "barrier/1").await;

    // One PUBACK, exactly one more message.
    let first = outstanding.pop_front().unwrap();
    sub.ack(&first).await;
    receive_next(&mut sub, &mut next, &mut outstanding).await;
    assert_nothing_before_suback(&mut sub, "barrier/2").await;

    // Acknowledging everything lets the rest through, the window refilled each time.
    let mut round = 3;
    while !outstanding.is_empty() {
        while let Some(publish) = outstanding.pop_front() {
            sub.ack(&publish).await;
        }
        for _ in 0..3.min(10 - next) {
            receive_next(&mut sub, &mut next, &mut outstanding).await;
        }
        assert_nothing_before_suback(&mut sub, &format!("barrier/{round}")).await;
        round += 1;
    }
    assert_eq!(next, 10);
    assert_nothing_before_marker(&mut publisher, &mut sub, "w/marker").await;
    sub.disconnect().await;
    broker.stop();
}

const FLOOD: u32 = 20_000;

fn flood_message(i: u32) -> Publish {
    let mut payload = vec![b'x'; 1024];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    publish_packet("flood", &payload, QoS::AtMostOnce, false, 0)
}

async fn expect_flood_message(fast: &mut TestClient, i: u32) {
    let publish = fast.recv_publish().await;
    assert_eq!(publish.payload.len(), 1024);
    let got = u32::from_be_bytes(publish.payload[..4].try_into().unwrap());
    assert_eq!(got, i, "messages missing or out of order");
}

/// The clients of the stalled-subscriber tests: `stalled` subscribed to `flood` and never read
/// again (but kept open), `fast` subscribed to `flood`, a `pinger` and a `publisher`.
async fn flood_clients(broker: &RunningBroker) -> [TestClient; 4] {
    let stalled = subscriber(addr(broker), "stalled", &[("flood", QoS::AtMostOnce)]).await;
    let fast = subscriber(addr(broker), "fast", &[("flood", QoS::AtMostOnce)]).await;
    let (pinger, _) = TestClient::connect(addr(broker), "pinger", true).await;
    let (publisher, _) = TestClient::connect(addr(broker), "pub", true).await;
    [stalled, fast, pinger, publisher]
}

/// After the flood: the stalled client's queue overflowed (counted in `messages_dropped`), the
/// broker still answers `pinger`, and `fast` received nothing beyond the flood.
async fn assert_flood_outcome(
    broker: &RunningBroker,
    pinger: &mut TestClient,
    publisher: &mut TestClient,
    fast: &mut TestClient,
) {
    assert!(broker.stats().messages_dropped > 0, "the stalled client's queue must have overflowed");
    pinger.ping().await;
    assert_nothing_before_marker(publisher, fast, "flood").await;
}

/// [MQTT-4.3.1-1] [MQTT-4.6.0-6] a subscriber that stops reading its socket (connection open,
/// nothing read) while 20 000 QoS 0 messages of 1 KiB are published does not hold up another
/// subscriber of the same topic, which receives every message in order; the stalled client's
/// queue (`max-queued-messages: 100`) overflows into `messages_dropped`, and the broker keeps
/// answering other clients. The publisher sends in rounds of 50 that the other subscriber reads
/// before the next round, so this checks the stalled client's isolation only; the unpaced
/// variant below needs publisher back-pressure.
#[tokio::test]
async fn stalled_subscriber_does_not_hold_up_the_others() {
    const ROUND: u32 = 50;
    let broker = start_broker_with("max-queued-messages: 100\n");
    let [stalled, mut fast, mut pinger, mut publisher] = flood_clients(&broker).await;
    for round in 0..FLOOD / ROUND {
        let first = round * ROUND;
        for i in first..first + ROUND {
            publisher.send(flood_message(i)).await;
        }
        for i in first..first + ROUND {
            expect_flood_message(&mut fast, i).await;
        }
        if round % 100 == 0 {
            pinger.ping().await;
        }
    }
    assert_flood_outcome(&broker, &mut pinger, &mut publisher, &mut fast).await;
    drop(stalled);
    broker.stop();
}

/// [MQTT-4.3.1-1] [MQTT-4.6.0-6] as above, with the publisher sending as fast as it can while the
/// other subscriber reads concurrently: every message must still reach it in order. The
/// publisher is held back while the stalled client's queue fills, until that client counts as
/// stalled (no progress for the router's grace period); from then on its queue drops instead.
#[tokio::test]
async fn stalled_subscriber_does_not_hold_up_the_others_unpaced() {
    let broker = start_broker_with("max-queued-messages: 100\n");
    let [stalled, mut fast, mut pinger, mut publisher] = flood_clients(&broker).await;
    let publish_all = async {
        for i in 0..FLOOD {
            publisher.send(flood_message(i)).await;
        }
    };
    let receive_all = async {
        for i in 0..FLOOD {
            expect_flood_message(&mut fast, i).await;
        }
    };
    tokio::join!(publish_all, receive_all, pinger.ping());
    assert_flood_outcome(&broker, &mut pinger, &mut publisher, &mut fast).await;
    drop(stalled);
    broker.stop();
}

/// [MQTT-4.3.2-2] [MQTT-4.6.0-6] a burst of publishes that the broker reads and routes as one
/// batch, larger than `max-queued-messages`, reaches a subscriber that keeps up in full: the
/// queue only holds what the client cannot take yet, and nothing is counted as dropped.
#[tokio::test]
async fn burst_larger_than_the_queue_reaches_a_reading_subscriber() {
    let broker = start_broker_with("max-queued-messages: 5\n");
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("b/#", QoS::AtLeastOnce)]).await;
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        // Ten publishes in one write: one read, one routed batch, one delivery to `sub`.
        let mut burst = Vec::new();
        for i in 0..10u16 {
            let pkid = if qos == QoS::AtMostOnce { 0 } else { 100 + i };
            burst.extend(encode(publish_packet("b/t", format!("{i}").as_bytes(), qos, false, pkid)));
        }
        publisher.send_bytes(&burst).await;
        for i in 0..10u16 {
            if qos == QoS::AtLeastOnce {
                assert_eq!(publisher.recv().await, Packet::PubAck(PubAck { pkid: 100 + i }));
            }
        }
        for i in 0..10 {
            let publish = sub.recv_publish().await;
            assert_eq!((text(&publish), publish.qos), (format!("{i}").as_str(), qos), "message lost");
            sub.ack(&publish).await;
        }
        assert_eq!(broker.stats().messages_dropped, 0);
    }
    assert_nothing_before_marker(&mut publisher, &mut sub, "b/marker").await;
    broker.stop();
}

/// [MQTT-4.3.2-2] [MQTT-4.6.0-2] back-pressure instead of loss: a QoS 1 subscriber that reads
/// slower than its publisher writes makes the router hold the publisher's batches (and so its
/// PUBACKs) while the subscriber's backlog is at three quarters of `max-queued-messages`, so
/// every acknowledged message is delivered, in order, and nothing is dropped.
#[tokio::test]
async fn slow_subscriber_slows_the_publisher_instead_of_losing_messages() {
    const COUNT: u32 = 200;
    let broker = start_broker_with("max-queued-messages: 100\nmax-inflight-messages: 1\n");
    let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("slow/#", QoS::AtLeastOnce)]).await;
    let publish_all = async {
        for i in 0..COUNT {
            publisher.publish("slow/t", &i.to_be_bytes(), QoS::AtLeastOnce, false).await;
        }
    };
    let receive_slowly = async {
        for i in 0..COUNT {
            let publish = sub.recv_publish().await;
            assert_eq!(publish.payload.as_ref(), i.to_be_bytes(), "message missing or out of order");
            // A client slower than its publisher: this is what makes the queue grow.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            sub.ack(&publish).await;
        }
    };
    tokio::join!(publish_all, receive_slowly);
    let stats = broker.stats();
    assert_eq!(stats.messages_dropped, 0, "{stats:?}");
    assert!(stats.publisher_pauses > 0, "the publisher was never paused: {stats:?}");
    assert_nothing_before_marker(&mut publisher, &mut sub, "slow/marker").await;
    broker.stop();
}
