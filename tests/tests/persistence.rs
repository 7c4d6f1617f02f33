//! Persistence (`persistence:` in the config): what survives a restart of the broker.

use amqtt_tests::*;

/// A broker keeping its state in `dir`, with `sync` (`always` or `periodic`).
fn persistent_broker(dir: &std::path::Path, sync: &str) -> RunningBroker {
    start_broker_with(&format!(
        "persistence:\n  enabled: true\n  path: {}\n  sync: {sync}\nplugins: [auth_anonymous]\n",
        dir.join("state.redb").display()
    ))
}

/// A configuration file in `dir` for the `amqtt` process: a listener on a free port,
/// persistence on with `settings` (lines under `persistence:`), and `extra` lines.
fn process_config(dir: &std::path::Path, settings: &str, extra: &str) -> std::path::PathBuf {
    let config = dir.join("amqtt.yaml");
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\nplugins: [auth_anonymous]\npersistence:\n  enabled: true\n  \
         {settings}\n{extra}"
    );
    std::fs::write(&config, yaml).unwrap();
    config
}

/// A retained message, and its clearing, survive a graceful restart [MQTT-3.3.1-5]; a message
/// retained with QoS 1 comes back at QoS 1.
#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for sync in ["always", "periodic"] {
        let broker = persistent_broker(dir.path(), sync);
        let (mut publisher, _) = TestClient::connect(addr(&broker), "retainer", true).await;
        publisher.publish(&format!("kept/{sync}"), b"on", QoS::AtLeastOnce, true).await;
        publisher.publish(&format!("gone/{sync}"), b"x", QoS::AtLeastOnce, true).await;
        publisher.publish(&format!("gone/{sync}"), b"", QoS::AtLeastOnce, true).await;
        broker.stop();

        let broker = persistent_broker(dir.path(), sync);
        assert_eq!(broker.stats().retained_messages, if sync == "always" { 1 } else { 2 });
        let (mut subscriber, _) = TestClient::connect(addr(&broker), "later", true).await;
        subscriber
            .subscribe(&[(&format!("kept/{sync}"), QoS::ExactlyOnce), (&format!("gone/{sync}"), QoS::AtLeastOnce)])
            .await;
        let kept = subscriber.recv_publish().await;
        assert_eq!(
            (topic(&kept), text(&kept), kept.qos, kept.retain),
            (format!("kept/{sync}").as_str(), "on", QoS::AtLeastOnce, true)
        );
        subscriber.ack(&kept).await;
        let (mut publisher, _) = TestClient::connect(addr(&broker), "marker", true).await;
        assert_nothing_before_marker(&mut publisher, &mut subscriber, &format!("gone/{sync}")).await;
        broker.stop();
    }
}

/// A persistent session's subscriptions, and the QoS 1 and 2 messages published while its
/// client was away, survive a graceful restart: the client comes back to session present 1
/// [MQTT-3.2.2-2] and gets them, in order [MQTT-4.6.0-6], at their QoS [MQTT-3.1.2-5].
#[tokio::test]
async fn offline_messages_of_a_persistent_session_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = persistent_broker(dir.path(), "always");
    let (mut subscriber, _) = TestClient::connect(addr(&broker), "away", false).await;
    subscriber.subscribe(&[("news/#", QoS::ExactlyOnce)]).await;
    subscriber.disconnect().await;
    let (mut publisher, _) = TestClient::connect(addr(&broker), "newsroom", true).await;
    for i in 0..10u32 {
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
        publisher.publish("news/today", i.to_string().as_bytes(), qos, false).await;
    }
    broker.stop();

    let broker = persistent_broker(dir.path(), "always");
    let (mut subscriber, present) = TestClient::connect(addr(&broker), "away", false).await;
    assert!(present, "the session was restored");
    // All ten fit in the in-flight window: they come at once, then are acknowledged.
    let mut received = Vec::new();
    for i in 0..10u32 {
        let message = subscriber.recv_publish().await;
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
        assert_eq!((text(&message), message.qos), (i.to_string().as_str(), qos));
        received.push(message);
    }
    for message in &received {
        subscriber.ack(message).await;
    }
    // The subscription itself came back too.
    let (mut publisher, _) = TestClient::connect(addr(&broker), "newsroom", true).await;
    round_trip(&mut publisher, &mut subscriber, "news/later", b"live").await;
    subscriber.disconnect().await;
    broker.stop();

    // Acknowledged messages are gone from the store: nothing comes again.
    let broker = persistent_broker(dir.path(), "always");
    let (mut subscriber, present) = TestClient::connect(addr(&broker), "away", false).await;
    assert!(present);
    let (mut publisher, _) = TestClient::connect(addr(&broker), "newsroom", true).await;
    assert_nothing_before_marker(&mut publisher, &mut subscriber, "news/marker").await;
    broker.stop();
}

/// `kill -9` of the broker in the middle of a QoS 1 stream (and a QoS 2 one) with `sync:
/// always`: every message the publisher saw acknowledged (PUBACK, PUBREC) reaches the
/// persistent subscriber after the restart: at least once for QoS 1, exactly once for QoS 2.
#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    use amqtt_tests::broker_process::BrokerProcess;
    use std::collections::HashSet;

    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "sync: always", "max-queued-messages: 100000\n");
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut broker = BrokerProcess::start(&config);
        let a = broker.addr().await;
        let (mut subscriber, _) = TestClient::connect(a, &format!("keeper-{qos}"), false).await;
        subscriber.subscribe(&[("stream/#", qos)]).await;
        subscriber.disconnect().await;

        // Publishes one message at a time and notes each acknowledged one, until the broker dies.
        let (mut publisher, _) = LenientClient::try_connect(a, connect_packet("streamer", true)).await.unwrap();
        let publishing = tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0u32.. {
                let pkid = (i % 60_000) as u16 + 1;
                let publish = publish_packet("stream/x", i.to_string().as_bytes(), qos, false, pkid);
                publisher.send(publish).await;
                match publisher.recv_or_closed().await {
                    Some(Packet::PubAck(_)) | Some(Packet::PubRec(_)) => acknowledged.push(i),
                    _ => break,
                }
                if qos == QoS::ExactlyOnce {
                    publisher.send(Packet::PubRel(PubRel { pkid })).await;
                    if publisher.recv_or_closed().await.is_none() {
                        break;
                    }
                }
            }
            acknowledged
        });
        // Killed while the stream runs: once some messages are through, at an arbitrary point.
        let (mut watcher, _) = TestClient::connect(a, "watcher", true).await;
        watcher.subscribe(&[("stream/#", QoS::AtMostOnce)]).await;
        for _ in 0..200 {
            watcher.recv_publish().await;
        }
        broker.kill().await;
        let acknowledged = publishing.await.unwrap();
        // The publisher sends a message once the one before is acknowledged: the watcher's
        // 200th message was sent after 199 acknowledgements (its own may be lost in the kill).
        assert!(acknowledged.len() >= 199, "{} acknowledged", acknowledged.len());

        let mut broker = BrokerProcess::start(&config);
        let a = broker.addr().await;
        let (mut subscriber, present) = TestClient::connect(a, &format!("keeper-{qos}"), false).await;
        assert!(present);
        let wanted: HashSet<u32> = acknowledged.iter().copied().collect();
        let mut seen = HashSet::new();
        while !wanted.is_subset(&seen) {
            match subscriber.recv().await {
                Packet::Publish(message) => {
                    let n: u32 = text(&message).parse().unwrap();
                    let first_time = seen.insert(n);
                    assert!(first_time || qos == QoS::AtLeastOnce, "QoS 2 message {n} delivered twice");
                    let pkid = message.pkid;
                    match qos {
                        QoS::ExactlyOnce => subscriber.send(Packet::PubRec(PubRec { pkid })).await,
                        _ => subscriber.send(Packet::PubAck(PubAck { pkid })).await,
                    }
                }
                Packet::PubRel(PubRel { pkid }) => subscriber.send(Packet::PubComp(PubComp { pkid })).await,
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(broker);
    }
}

/// `session_expiry_interval`: a persistent session whose client stays away that long is removed,
/// in memory and in the store; one whose client comes back in time is not.
#[tokio::test]
async fn session_expiry_removes_sessions_in_memory_and_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "persistence:\n  enabled: true\n  path: {}\nsession_expiry_interval: 1\nplugins: [auth_anonymous]\n",
        dir.path().join("state.redb").display()
    );
    let broker = start_broker_with(&yaml);
    for id in ["in-memory", "in-store"] {
        let (mut client, _) = TestClient::connect(addr(&broker), id, false).await;
        client.subscribe(&[("x", QoS::AtLeastOnce)]).await;
        client.disconnect().await;
    }
    // Back in time: still there.
    let (client, present) = TestClient::connect(addr(&broker), "in-memory", false).await;
    assert!(present);
    client.disconnect().await;
    // Away for longer than the interval (the event awaited here is time itself).
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let (_client, present) = TestClient::connect(addr(&broker), "in-memory", false).await;
    assert!(!present, "expired in memory");
    broker.stop();

    let broker = start_broker_with(&yaml);
    let (_client, present) = TestClient::connect(addr(&broker), "in-store", false).await;
    assert!(!present, "expired in the store too");
    broker.stop();
}

/// Every delivery that was acknowledged is gone from the store: after a graceful restart,
/// persistent subscribers that acknowledged everything get nothing again. The router stores a
/// message for a persistent session before the session can send it; the other way round, a fast
/// acknowledgement could reach the store first and the message would stay behind, to be sent
/// again (a QoS 2 message twice) after every restart.
#[tokio::test]
async fn acknowledged_deliveries_are_not_sent_again_after_a_restart() {
    const SUBSCRIBERS: usize = 4;
    const PUBLISHERS: usize = 2;
    const MESSAGES: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let broker = persistent_broker(dir.path(), "always");
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (mut subscriber, _) = TestClient::connect(addr(&broker), &format!("acker-{i}"), false).await;
        subscriber.subscribe(&[("load/#", QoS::ExactlyOnce)]).await;
        // Acknowledges as soon as it reads, with many messages in flight.
        readers.push(tokio::spawn(async move {
            subscriber.collect(PUBLISHERS * MESSAGES).await;
            subscriber
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (mut publisher, _) = TestClient::connect(addr(&broker), &format!("loader-{p}"), true).await;
        publishers.push(tokio::spawn(async move {
            for n in 0..MESSAGES {
                let qos = if n % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
                publisher.publish(&format!("load/{p}"), n.to_string().as_bytes(), qos, false).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for reader in readers {
        // DISCONNECT after the last acknowledgement: the broker has handled them all once it
        // closes the connection.
        reader.await.unwrap().disconnect().await;
    }
    broker.stop();

    let broker = persistent_broker(dir.path(), "always");
    let (mut marker, _) = TestClient::connect(addr(&broker), "marker", true).await;
    for i in 0..SUBSCRIBERS {
        let (mut subscriber, present) = TestClient::connect(addr(&broker), &format!("acker-{i}"), false).await;
        assert!(present, "acker-{i}: session present");
        assert_nothing_before_marker(&mut marker, &mut subscriber, "load/marker").await;
    }
    broker.stop();
}

/// A clean connection taking over a persistent session removes its stored state for good, even
/// while the old connection is still publishing: the old session must not store anything more
/// (here the QoS 2 packet ids it is receiving) once the removal is on its way to the store.
/// Else a later persistent session of the same client id would find them after a restart, and
/// take a new QoS 2 message with one of those ids for a duplicate, and drop it. Checked with
/// the `amqtt` process, whose `persistence: state restored` line counts what the store held.
#[tokio::test]
async fn a_session_removed_by_a_clean_takeover_leaves_nothing_behind_in_the_store() {
    use amqtt_tests::broker_process::BrokerProcess;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "sync: always", "");
    let mut broker = BrokerProcess::start(&config);
    let a = broker.addr().await;
    broker
        .logging_while(async {
            // The old connection: QoS 2 PUBLISHes with ever new packet ids, PUBREL never sent, as
            // fast as the broker takes them, until the takeover closes it.
            let old = tokio::net::TcpStream::connect(a).await.unwrap();
            let (mut reader, mut writer) = old.into_split();
            writer.write_all(&amqtt_tests::raw::encode(connect_packet("flooder", false))).await.unwrap();
            // Signalled once the broker answered 2 000 of them (CONNACK and PUBREC: 4 bytes each).
            let (busy, busy_now) = tokio::sync::oneshot::channel();
            let reading = tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let (mut read, mut busy) = (0, Some(busy));
                while let Ok(n @ 1..) = reader.read(&mut buf).await {
                    read += n;
                    if read >= 4 + 2_000 * 4 {
                        busy.take().map(|busy| busy.send(()));
                    }
                }
            });
            let writing = tokio::spawn(async move {
                for chunk in 0..64u16 {
                    let packets = (chunk * 1000 + 1..=chunk * 1000 + 1000)
                        .flat_map(|pkid| {
                            amqtt_tests::raw::encode(publish_packet("flood/t", b"x", QoS::ExactlyOnce, false, pkid))
                        })
                        .collect::<Vec<u8>>();
                    if writer.write_all(&packets).await.is_err() {
                        break;
                    }
                }
            });
            // While the old session is busy storing their packet ids, a clean connection takes over.
            busy_now.await.expect("the broker answered 2 000 QoS 2 PUBLISHes");
            let (taker, present) = TestClient::connect(a, "flooder", true).await;
            assert!(!present);
            taker.disconnect().await;
            reading.await.unwrap();
            writing.await.unwrap();
            // A new persistent session under the same id, empty, kept over a restart.
            let (again, present) = TestClient::connect(a, "flooder", false).await;
            assert!(!present, "the clean takeover ended the old session");
            again.disconnect().await;
        })
        .await;
    let (status, log) = broker.terminate().await;
    assert!(status.success(), "exit status {status}:\n{log}");

    let mut broker = BrokerProcess::start(&config);
    let restored = broker.log_line("what was restored", |line| line.contains("persistence: state restored")).await;
    let fields: Vec<&str> = restored.split_whitespace().collect();
    for count in ["sessions=1", "messages=0", "incoming=0"] {
        assert!(fields.contains(&count), "{count} in {restored:?}");
    }
    let (status, log) = broker.terminate().await;
    assert!(status.success(), "exit status {status}:\n{log}");
}

/// The `amqtt` process stopped with SIGTERM and started again on the same file: the retained
/// message, the persistent subscription and the messages queued for it meanwhile are back.
#[tokio::test]
async fn state_survives_a_sigterm_restart_of_the_process() {
    use amqtt_tests::broker_process::BrokerProcess;

    let dir = tempfile::tempdir().unwrap();
    let config = process_config(dir.path(), "sync: periodic\n  sync-interval: 60", "");
    let mut broker = BrokerProcess::start(&config);
    let a = broker.addr().await;
    let (mut subscriber, _) = TestClient::connect(a, "returning", false).await;
    subscriber.subscribe(&[("inbox/#", QoS::AtLeastOnce)]).await;
    subscriber.disconnect().await;
    let (mut publisher, _) = TestClient::connect(a, "sender", true).await;
    publisher.publish("status", b"up", QoS::AtLeastOnce, true).await;
    publisher.publish("inbox/1", b"while you were away", QoS::AtLeastOnce, false).await;
    // Periodic sync with a long interval: only the graceful stop writes this to disk.
    let (status, log) = broker.terminate().await;
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(log.contains("persistence: everything saved"), "{log}");

    let mut broker = BrokerProcess::start(&config);
    let a = broker.addr().await;
    let (mut subscriber, present) = TestClient::connect(a, "returning", false).await;
    assert!(present);
    let queued = subscriber.recv_publish().await;
    assert_eq!((topic(&queued), text(&queued)), ("inbox/1", "while you were away"));
    subscriber.ack(&queued).await;
    subscriber.subscribe(&[("status", QoS::AtLeastOnce)]).await;
    let retained = subscriber.recv_publish().await;
    assert_eq!((topic(&retained), text(&retained), retained.retain), ("status", "up", true));
    subscriber.ack(&retained).await;
}

/// A file that is not a store of this broker stops start-up with a message naming the file and
/// saying what to do; the file is left as it was.
#[test]
fn a_corrupt_store_stops_start_up_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::write(&path, b"this is not a database, but somebody's notes").unwrap();
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\npersistence:\n  enabled: true\n  path: {}\n",
        path.display()
    );
    let (config, _) = Config::from_yaml_str(&yaml, None).unwrap();
    let error = match Broker::new(config).workers(1).start() {
        Ok(_) => panic!("started on a corrupt store"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"this is not a database, but somebody's notes");
}
