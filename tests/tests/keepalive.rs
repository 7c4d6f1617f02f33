//! Keep-alive (MQTT 3.1.1 sections 3.1.2.10 and 3.12), end to end: a client silent for 1.5
//! times its keep-alive is disconnected, any packet keeps it alive, PINGREQ is answered, 0
//! disables the mechanism, and `timeout-disconnect-delay` adds grace.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amqtt_tests::*;

/// Connects `client_id` with the given keep-alive (seconds). Returns the client and the instant
/// just before the CONNECT was sent: the broker's keep-alive timer cannot start earlier.
async fn connect_with_keep_alive(addr: SocketAddr, client_id: &str, keep_alive: u16) -> (TestClient, Instant) {
    let start = Instant::now();
    let (client, _) =
        TestClient::connect_accepted(addr, Connect { keep_alive, ..connect_packet(client_id, true) }).await;
    (client, start)
}

/// Asserts that `client` is still open until `open_until` after `start` and closed by the
/// broker within `bound` after that.
async fn assert_closed_between(client: &mut TestClient, start: Instant, open_until: Duration, bound: Duration) {
    let early = open_until.saturating_sub(start.elapsed());
    assert!(!client.closed_within(early).await, "closed before {open_until:?}");
    assert!(client.closed_within(bound).await, "still open {bound:?} after {open_until:?}");
    let elapsed = start.elapsed();
    assert!(elapsed >= open_until, "closed after {elapsed:?}");
}

/// [MQTT-3.1.2-24] keep-alive 1 s: a silent client is disconnected after 1.5 s, not before
/// ~1.4 s; the other clients are not affected.
#[tokio::test]
async fn silent_client_disconnected_after_one_and_a_half_keep_alive() {
    let broker = start_broker();
    let (mut other, _) = TestClient::connect(addr(&broker), "other", true).await;
    let (mut silent, start) = connect_with_keep_alive(addr(&broker), "silent", 1).await;
    assert_closed_between(&mut silent, start, Duration::from_millis(1400), Duration::from_secs(5)).await;
    other.ping().await;
    // The timeout is not a protocol error.
    assert_eq!(broker.stats().protocol_errors, 0);
    broker.stop();
}

/// [MQTT-3.1.2-24] the keep-alive timeout publishes the will message, like every close but
/// DISCONNECT [MQTT-3.1.2-8].
#[tokio::test]
async fn keep_alive_timeout_publishes_the_will() {
    let broker = start_broker();
    let mut sub = subscriber(addr(&broker), "will-watcher", &[("will/#", QoS::AtLeastOnce)]).await;
    let will = last_will("will/silent", b"timed out", QoS::AtLeastOnce, false);
    let (mut silent, _) = TestClient::connect_accepted(
        addr(&broker),
        Connect { keep_alive: 1, will: Some(will), ..connect_packet("will-silent", true) },
    )
    .await;
    assert!(silent.closed_within(Duration::from_secs(5)).await);
    let got = sub.recv_publish().await;
    assert_eq!((got.topic.as_ref() as &str, got.payload.as_ref()), ("will/silent", b"timed out".as_ref()));
    broker.stop();
}

/// [MQTT-3.12.4-1] PINGREQ gets PINGRESP; [MQTT-3.1.2-24] a client sending PINGREQ every
/// 0.5 s with keep-alive 1 s stays connected past 3 s.
#[tokio::test]
async fn pinging_client_stays_connected() {
    let broker = start_broker();
    let (mut client, start) = connect_with_keep_alive(addr(&broker), "pinger", 1).await;
    while start.elapsed() < Duration::from_millis(3200) {
        // Pacing, not waiting for an event: this is how often the client pings.
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.ping().await;
    }
    assert!(start.elapsed() > Duration::from_secs(3));
    // Still alive: it answers, and it is then disconnected once it stops pinging.
    client.ping().await;
    let last = Instant::now();
    assert_closed_between(&mut client, last, Duration::from_millis(1400), Duration::from_secs(5)).await;
    broker.stop();
}

/// [MQTT-3.1.2-24] any control packet, not only PINGREQ, resets the keep-alive timer: a client
/// that publishes QoS 0 every 0.5 s (never answered, so it reads nothing) stays connected.
#[tokio::test]
async fn any_packet_resets_the_keep_alive_timer() {
    let broker = start_broker();
    let (mut sub, _) = TestClient::connect(addr(&broker), "ka-sub", true).await;
    sub.subscribe(&[("ka/#", QoS::AtMostOnce)]).await;
    let (mut client, start) = connect_with_keep_alive(addr(&broker), "publisher", 1).await;
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(3200) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.publish("ka/t", b"alive", QoS::AtMostOnce, false).await;
        sent += 1;
    }
    for _ in 0..sent {
        assert_eq!(sub.recv_publish().await.payload.as_ref(), b"alive");
    }
    // Connected past 3 s: a subscription still round-trips.
    assert_eq!(
        client.subscribe(&[("ka/self", QoS::AtMostOnce)]).await,
        vec![SubscribeReturnCode::Success(QoS::AtMostOnce)]
    );
    broker.stop();
}

/// [MQTT-3.1.2-24] keep-alive 0 turns the mechanism off: a silent client is still connected
/// after 2 s.
#[tokio::test]
async fn keep_alive_zero_means_no_timeout() {
    let broker = start_broker();
    let (mut client, start) = connect_with_keep_alive(addr(&broker), "forever", 0).await;
    assert!(!client.closed_within(Duration::from_secs(2)).await, "keep-alive 0 client was disconnected");
    assert!(start.elapsed() >= Duration::from_secs(2));
    client.ping().await;
    broker.stop();
}

/// `timeout-disconnect-delay: 1` adds 1 s to the 1.5 x keep-alive deadline: with keep-alive 1 s
/// the silent client is still open at 2.3 s and closed soon after 2.5 s.
#[tokio::test]
async fn timeout_disconnect_delay_extends_the_deadline() {
    let broker = start_broker_with("timeout-disconnect-delay: 1\n");
    let (mut client, start) = connect_with_keep_alive(addr(&broker), "delayed", 1).await;
    assert_closed_between(&mut client, start, Duration::from_millis(2300), Duration::from_secs(5)).await;
    broker.stop();
}
