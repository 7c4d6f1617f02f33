//! A soak subscriber: one filter, at its QoS; killed now and then by the chaos task, it comes
//! back after a random outage. A persistent one (clean session 0) subscribes once, at the start,
//! and expects the broker to have kept its session every time it returns (CONNACK
//! session-present, the subscription, the messages queued and in flight meanwhile); what it
//! receives goes into the ledger. A clean one subscribes again on every connection and only
//! counts.
//!
//! As a QoS 2 receiver it keeps, across its connections as the protocol asks of a client with
//! a persistent session, the packet ids it answered PUBREC to and got no PUBREL for yet: a
//! PUBLISH that comes again with one of them is the same message resent (not a second
//! delivery) [MQTT-4.3.3-2].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use amqtt_protocol::{Packet, PubAck, PubComp, PubRec, QoS};
use anyhow::Context;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::rng::Rng;
use super::state::{bump, Run};
use super::topology::SubscriberSpec;
use crate::flow::HEADER_LEN;

/// Well within the bench clients' keep-alive (`client::KEEP_ALIVE_SECS`).
const PING_EVERY: Duration = Duration::from_secs(60);

/// Why the connection ends.
enum Outage {
    /// By the chaos task: closed with an RST or a FIN, no DISCONNECT.
    Killed { reset: bool },
    /// By the broker.
    Lost,
}

pub struct Subscriber {
    pub index: usize,
    pub spec: SubscriberSpec,
    pub run: Arc<Run>,
    pub kill: Arc<Notify>,
    /// Ends the subscriber, after the final drain.
    pub stop: CancellationToken,
    /// Told once the first subscription is acknowledged (or failed).
    pub ready: mpsc::Sender<anyhow::Result<()>>,
    pub rng: Rng,
}

impl Subscriber {
    pub async fn run(mut self) -> anyhow::Result<()> {
        let run = self.run.clone();
        let persistent = self.spec.persistent;
        let kind = if persistent { "ps" } else { "cs" };
        let client_id = format!("soak-{}-{kind}{}", run.run_id, self.index);
        let filter = run.topology.filter(self.index);
        let mut awaiting_pubrel: HashSet<u16> = HashSet::new();
        let mut deliveries = Vec::new();
        let mut replies = BytesMut::new();

        let setup = async {
            if persistent {
                // Whatever session an earlier run left under this id goes first.
                run.connect(&client_id, true).await?.0.disconnect().await;
            }
            let (mut conn, _) = run.connect(&client_id, !persistent).await?;
            conn.subscribe(&filter, self.spec.qos).await?;
            anyhow::Ok(conn)
        };
        let mut conn = match setup.await {
            Ok(conn) => {
                let _ = self.ready.send(Ok(())).await;
                conn
            }
            Err(error) => {
                let _ = self.ready.send(Err(error)).await;
                return Ok(());
            }
        };

        // A subscriber at QoS 0 never writes: pings keep it within its keep-alive however long
        // the soak runs.
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // What is buffered first: the CONNACK of a resumed session may come in one read with
            // the first PUBLISHes resent, and the broker sends no more until they are answered.
            let mut outcome = None;
            while let Some(frame) = conn.next_frame()? {
                let packet = Packet::read(frame).with_context(|| format!("{client_id}: undecodable packet"))?;
                self.on_packet(packet, &client_id, &mut awaiting_pubrel, &mut deliveries, &mut replies)?;
            }
            if persistent {
                run.ledger.delivered(self.index, &deliveries);
            }
            let counter = if persistent { &run.counters.delivered_persistent } else { &run.counters.delivered_clean };
            counter.fetch_add(deliveries.len() as u64, Ordering::Relaxed);
            deliveries.clear();
            if !replies.is_empty() {
                if conn.stream.write_all(&replies).await.is_err() {
                    bump(&run.counters.closed_by_broker);
                    run.note(format!("{client_id}: write failed: the broker closed the connection"));
                    outcome = Some(Outage::Lost);
                }
                replies.clear();
            }
            if outcome.is_none() {
                outcome = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => {
                        conn.disconnect().await;
                        return Ok(());
                    }
                    _ = ping.tick() => {
                        let _ = conn.send(&Packet::PingReq).await;
                        None
                    }
                    _ = self.kill.notified() => {
                        bump(if persistent { &run.counters.kills_persistent } else { &run.counters.kills_clean });
                        Some(Outage::Killed { reset: self.rng.chance(0.5) })
                    }
                    read = conn.fill() => match read {
                        Ok(_) => None,
                        Err(_) => {
                            bump(&run.counters.closed_by_broker);
                            run.note(format!("{client_id}: the broker closed the connection"));
                            Some(Outage::Lost)
                        }
                    },
                };
            }
            let outage = match outcome {
                None => continue,
                Some(Outage::Killed { reset }) => {
                    run.trace(|| format!("{client_id} killed ({})", if reset { "RST" } else { "FIN" }));
                    conn.abort(reset);
                    self.rng.duration(Duration::from_millis(50), Duration::from_secs(2))
                }
                Some(Outage::Lost) => {
                    drop(conn);
                    Duration::from_millis(100)
                }
            };
            tokio::time::sleep(outage).await;
            // Back: a persistent client finds its session; a clean one starts over.
            let (new_conn, present) = run.connect(&client_id, !persistent).await?;
            conn = new_conn;
            bump(&run.counters.reconnects);
            run.trace(|| {
                format!("{client_id} back (session present: {present}, awaiting PUBREL: {})", awaiting_pubrel.len())
            });
            if !persistent {
                awaiting_pubrel.clear();
                conn.subscribe(&filter, self.spec.qos).await?;
            } else if !present {
                bump(&run.counters.sessions_lost);
                run.note(format!("{client_id}: the broker lost this persistent subscriber's session"));
                awaiting_pubrel.clear();
                conn.subscribe(&filter, self.spec.qos).await?;
            }
        }
    }

    /// One packet from the broker: records a delivery and queues the answer the QoS flow needs.
    fn on_packet(
        &self,
        packet: Packet,
        client_id: &str,
        awaiting_pubrel: &mut HashSet<u16>,
        deliveries: &mut Vec<(usize, u64)>,
        replies: &mut BytesMut,
    ) -> anyhow::Result<()> {
        let publish = match packet {
            Packet::Publish(publish) => publish,
            Packet::PingResp => return Ok(()),
            Packet::PubRel(rel) => {
                awaiting_pubrel.remove(&rel.pkid);
                Packet::PubComp(PubComp { pkid: rel.pkid }).write(replies)?;
                return Ok(());
            }
            other => {
                self.anomaly(client_id, format!("unexpected {other:?}"));
                return Ok(());
            }
        };
        let first_time = match publish.qos {
            QoS::AtMostOnce => true,
            QoS::AtLeastOnce => {
                Packet::PubAck(PubAck { pkid: publish.pkid }).write(replies)?;
                true
            }
            QoS::ExactlyOnce => {
                Packet::PubRec(PubRec { pkid: publish.pkid }).write(replies)?;
                awaiting_pubrel.insert(publish.pkid)
            }
        };
        let Some(header) = publish.payload.get(..HEADER_LEN) else {
            self.anomaly(client_id, format!("a payload of {} bytes on {}", publish.payload.len(), publish.topic));
            return Ok(());
        };
        let field = |range: std::ops::Range<usize>| header[range].iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        let (publisher, seq) = (field(8..12) as usize, field(12..20));
        let topology = &self.run.topology;
        match (publisher < topology.publishers.len()).then(|| topology.delivery_qos(self.index, publisher, seq)) {
            Some(Some(qos)) if qos == publish.qos => {}
            Some(Some(qos)) => self.anomaly(
                client_id,
                format!("message {publisher}/{seq} on {} delivered at QoS {}, not {qos}", publish.topic, publish.qos),
            ),
            _ => self.anomaly(client_id, format!("message {publisher}/{seq} on {}: outside the filter", publish.topic)),
        }
        if first_time {
            deliveries.push((publisher, seq));
        }
        Ok(())
    }

    fn anomaly(&self, client_id: &str, what: String) {
        bump(&self.run.counters.protocol_anomalies);
        self.run.note(format!("{client_id}: {what}"));
    }
}
