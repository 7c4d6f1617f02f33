//! Graceful shutdown of the `amqtt` process on SIGTERM and SIGINT (issue 9): the listeners close
//! at once, every message a publisher was acknowledged reaches a subscriber that reads, and the
//! process exits with status 0 within 5 seconds even when a client does not read at all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amqtt_tests::broker_process::BrokerProcess;
use amqtt_tests::*;

/// What a service manager allows before it kills the process; the broker must be done by then.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// Starts `amqtt` on `yaml` (listeners added) and returns it with its address.
async fn start(dir: &tempfile::TempDir, yaml: &str) -> (BrokerProcess, SocketAddr) {
    let config = dir.path().join("amqtt.yaml");
    std::fs::write(
        &config,
        format!("listeners:\n  default:\n    bind: 127.0.0.1:0\nplugins: [auth_anonymous]\n{yaml}"),
    )
    .unwrap();
    let mut broker = BrokerProcess::start(&config);
    let addr = broker.addr().await;
    (broker, addr)
}

/// Sends `signal` and waits for the process to end: it must exit with status 0 within
/// [`EXIT_WITHIN`]. Returns its log.
async fn stop_with(broker: BrokerProcess, signal: &str) -> String {
    let sent = Instant::now();
    broker.signal(signal);
    let (status, log) = broker.exit().await;
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status} after SIG{signal}:\n{log}");
    assert!(took < EXIT_WITHIN, "exit took {took:?} after SIG{signal}:\n{log}");
    log
}

/// A subscriber with an in-flight window of 10 has 300 QoS 1 messages routed to it, all
/// acknowledged to their publisher, while it does not read: 10 are in flight, the rest wait in
/// its queue. On `signal` it starts reading and acknowledging: it must get all 300 before the
/// broker closes its connection, and the broker must exit cleanly in time.
async fn acknowledged_messages_reach_a_reading_subscriber(signal: &'static str) {
    const MESSAGES: u16 = 300;
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(&dir, "max-inflight-messages: 10\nmax-queued-messages: 1000\n").await;
    let (mut subscriber, _) = LenientClient::try_connect(addr, connect_packet("reader", true)).await.unwrap();
    subscriber
        .send(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter { filter: ByteString::from_static("acked/#"), qos: QoS::AtLeastOnce }],
        })
        .await;
    assert!(matches!(subscriber.recv_or_closed().await, Some(Packet::SubAck(_))));

    let (mut publisher, _) = TestClient::connect(addr, "writer", true).await;
    for pkid in 1..=MESSAGES {
        publisher.send(publish_packet("acked/t", pkid.to_string().as_bytes(), QoS::AtLeastOnce, false, pkid)).await;
    }
    let mut acked = Vec::new();
    while acked.len() < MESSAGES as usize {
        match publisher.recv().await {
            Packet::PubAck(PubAck { pkid }) => acked.push(pkid.to_string()),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    // All acknowledged before the signal; now the broker has to deliver them before it goes.
    let stopping = tokio::spawn(stop_with(broker, signal));
    let mut received = Vec::new();
    while let Some(packet) = subscriber.recv_or_closed().await {
        match packet {
            Packet::Publish(publish) => {
                subscriber.send(PubAck { pkid: publish.pkid }).await;
                received.push(String::from_utf8(publish.payload.to_vec()).unwrap());
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    drop(subscriber);
    stopping.await.unwrap();
    assert_eq!(received, acked, "every acknowledged message, in order, before the close");
}

#[tokio::test]
async fn on_sigterm_every_acknowledged_message_reaches_a_reading_subscriber() {
    acknowledged_messages_reach_a_reading_subscriber("TERM").await;
}

#[tokio::test]
async fn on_sigint_every_acknowledged_message_reaches_a_reading_subscriber() {
    acknowledged_messages_reach_a_reading_subscriber("INT").await;
}

/// The send and receive queues (bytes) of the TCP socket from `local` to `remote`, from
/// /proc/net/tcp (Linux), if there is one.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let port = |hex: &str| hex.split(':').nth(1).and_then(|port| u16::from_str_radix(port, 16).ok());
    let table = std::fs::read_to_string("/proc/net/tcp").expect("no /proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if port(fields[1]) != Some(local.port()) || port(fields[2]) != Some(remote.port()) {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some((u64::from_str_radix(tx, 16).ok()?, u64::from_str_radix(rx, 16).ok()?))
    })
}

/// A subscriber that never reads, and a publisher that has been acknowledged 15 MB of QoS 1
/// messages for it: the socket between the broker and the subscriber is full both ways (the
/// broker has bytes it cannot send), and more wait in the broker. Returns the two clients, to
/// keep them connected.
async fn stalled_subscriber(addr: SocketAddr) -> (tokio::net::TcpStream, TestClient) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&raw::encode(connect_packet("stalled", true))).await.unwrap();
    let subscribe = Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter { filter: ByteString::from_static("big"), qos: QoS::AtLeastOnce }],
    };
    stalled.write_all(&raw::encode(subscribe)).await.unwrap();
    // Its CONNACK and SUBACK are the last it reads.
    let mut answers = [0u8; 9];
    stalled.read_exact(&mut answers).await.unwrap();
    assert_eq!(answers, [0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x01]);
    let (mut publisher, _) = TestClient::connect(addr, "flooder", true).await;
    let payload = vec![b'x'; 256 * 1024];
    for _ in 0..60 {
        publisher.publish("big", &payload, QoS::AtLeastOnce, false).await;
    }
    let local = stalled.local_addr().unwrap();
    let (broker_unsent, _) = tcp_queues(addr, local).expect("no socket from the broker to the subscriber");
    let (_, unread) = tcp_queues(local, addr).expect("no socket from the subscriber to the broker");
    assert!(broker_unsent > 0 && unread > 0, "the socket is not full: {broker_unsent} B unsent, {unread} B unread");
    (stalled, publisher)
}

#[tokio::test]
async fn exits_in_time_with_500_clients_one_of_them_not_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start(&dir, "").await;
    // A line per connection: the log is read meanwhile, or the broker would block on it.
    let (clients, stalled) = broker
        .logging_while(async {
            let mut clients = Vec::new();
            for i in 0..498 {
                let (client, _) = TestClient::connect(addr, &format!("idle-{i}"), true).await;
                clients.push(client);
            }
            (clients, stalled_subscriber(addr).await)
        })
        .await;
    let log = stop_with(broker, "TERM").await;
    assert!(log.contains("cut off"), "the deadline's cut is logged:\n{log}");
    drop((clients, stalled));
}

/// Once the broker has begun to stop (its listener is closed, while a client that does not
/// read holds the shutdown open), a new connection is refused.
async fn new_connections_are_refused(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, addr) = start(&dir, "").await;
    let stalled = stalled_subscriber(addr).await;
    broker.signal(signal);
    broker.log_line("listener closed", |line| line.contains("listener closed")).await;
    let refused = tokio::net::TcpStream::connect(addr).await.map(|_| ()).map_err(|error| error.kind());
    assert!(broker.is_running(), "still draining: the refusal is the listener's, not a dead process's");
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
    let (status, log) = broker.exit().await;
    assert!(status.success(), "exit status {status}:\n{log}");
    drop(stalled);
}

#[tokio::test]
async fn after_sigterm_new_connections_are_refused() {
    new_connections_are_refused("TERM").await;
}

#[tokio::test]
async fn after_sigint_new_connections_are_refused() {
    new_connections_are_refused("INT").await;
}
