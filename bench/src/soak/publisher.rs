//! A soak publisher: paced at its share of `--rate`, at its QoS, with at most WINDOW QoS 1/2
//! PUBLISHes unacknowledged; killed now and then by the chaos task, it reconnects after a random
//! outage. A persistent one (clean session 0) then resends what was not acknowledged, with DUP
//! and the same packet ids, and the PUBRELs of what was — the broker must not route a resent
//! QoS 2 message twice. A clean one abandons them (never acknowledged, so never owed).
//!
//! A message counts as acknowledged at PUBACK (QoS 1) or PUBREC (QoS 2): from then on the
//! broker owns it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqtt_protocol::{ByteString, Packet, PubRel, Publish, QoS};
use anyhow::Context;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::rng::Rng;
use super::state::{bump, Run};
use super::topology::PublisherSpec;
use crate::flow::{now_ns, HEADER_LEN};

/// Unacknowledged QoS 1/2 PUBLISHes per publisher.
const WINDOW: usize = 32;
/// Payload bytes: the header (timestamp, publisher, sequence) and some padding.
pub const PAYLOAD: usize = 32;
/// How often a publisher sends what its rate makes due.
const TICK: Duration = Duration::from_millis(10);
/// A publisher held back longer than this skips the messages it could not send rather than
/// bursting them all afterwards.
const MAX_BACKLOG: Duration = Duration::from_secs(1);
/// How long a stopping publisher waits for its last acknowledgements.
const FINISH: Duration = Duration::from_secs(15);
/// A write the broker does not take within this long is an anomaly (it stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// QoS 1 sent: PUBACK.
    Ack,
    /// QoS 2 sent: PUBREC.
    Received,
    /// PUBREL sent: PUBCOMP.
    Complete,
}

#[derive(Debug, Clone, Copy)]
struct Outgoing {
    seq: u64,
    subtopic: usize,
    awaiting: Awaiting,
}

pub struct Publisher {
    pub index: usize,
    pub spec: PublisherSpec,
    /// Messages per second.
    pub rate: f64,
    pub run: Arc<Run>,
    pub kill: Arc<Notify>,
    pub stop: CancellationToken,
    pub rng: Rng,
}

impl Publisher {
    pub async fn run(mut self) -> anyhow::Result<()> {
        let run = self.run.clone();
        let client_id = format!("soak-{}-p{}", run.run_id, self.index);
        let topics: Vec<ByteString> = run.topology.topics(self.index).into_iter().map(ByteString::from).collect();
        let persistent = self.spec.persistent;
        let acked_qos = self.spec.qos != QoS::AtMostOnce;
        let mut inflight: BTreeMap<u16, Outgoing> = BTreeMap::new();
        let mut last_pkid = 0u16;
        let mut seq = 0u64;
        // Sequence numbers used or skipped: what the rate has made due so far.
        let mut slots = 0u64;
        let mut stopping: Option<Instant> = None;
        let mut acked = Vec::new();
        let mut wbuf = BytesMut::new();
        let start = Instant::now();
        let max_backlog = (self.rate * MAX_BACKLOG.as_secs_f64()).max(1.0) as u64;

        if persistent {
            // Whatever session an earlier run left under this id goes first.
            run.connect(&client_id, true).await?.0.disconnect().await;
        }
        let mut first = true;
        'connection: loop {
            let (mut conn, present) = run.connect(&client_id, !persistent).await?;
            if !first {
                bump(&run.counters.reconnects);
                run.trace(|| format!("{client_id} back (session present: {present}), {} in flight", inflight.len()));
                if persistent && !present {
                    bump(&run.counters.sessions_lost);
                    run.note(format!("{client_id}: the broker lost this persistent publisher's session"));
                }
            }
            first = false;
            wbuf.clear();
            if persistent {
                for (&pkid, out) in &inflight {
                    let packet = match out.awaiting {
                        Awaiting::Complete => Packet::PubRel(PubRel { pkid }),
                        _ => self.publish(topics[out.subtopic].clone(), pkid, out.seq, true),
                    };
                    packet.write(&mut wbuf)?;
                }
            } else {
                inflight.clear();
            }
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                if !wbuf.is_empty() {
                    match tokio::time::timeout(WRITE_TIMEOUT, conn.stream.write_all(&wbuf)).await {
                        Ok(Ok(())) => wbuf.clear(),
                        Ok(Err(_)) => {
                            bump(&run.counters.closed_by_broker);
                            run.note(format!("{client_id}: write failed: the broker closed the connection"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue 'connection;
                        }
                        Err(_) => anyhow::bail!("{client_id}: the broker took no data for {WRITE_TIMEOUT:?}"),
                    }
                }
                if let Some(since) = stopping {
                    if inflight.is_empty() || since.elapsed() >= FINISH {
                        run.counters.unacknowledged_at_end.fetch_add(inflight.len() as u64, Ordering::Relaxed);
                        conn.disconnect().await;
                        return Ok(());
                    }
                }
                tokio::select! {
                    biased;
                    _ = self.kill.notified(), if stopping.is_none() => {
                        bump(&run.counters.kills_publishers);
                        let reset = self.rng.chance(0.5);
                        run.trace(|| format!("{client_id} killed ({}), {} in flight", if reset { "RST" } else { "FIN" }, inflight.len()));
                        conn.abort(reset);
                        tokio::time::sleep(self.rng.duration(Duration::from_millis(50), Duration::from_secs(2))).await;
                        continue 'connection;
                    }
                    _ = self.stop.cancelled(), if stopping.is_none() => {
                        stopping = Some(Instant::now());
                    }
                    read = conn.fill() => {
                        if read.is_err() {
                            bump(&run.counters.closed_by_broker);
                            run.note(format!("{client_id}: the broker closed the connection"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue 'connection;
                        }
                        while let Some(frame) = conn.next_frame()? {
                            let packet = Packet::read(frame).with_context(|| format!("{client_id}: undecodable packet"))?;
                            self.on_ack(packet, &mut inflight, &mut acked, &mut wbuf, &client_id)?;
                        }
                        run.ledger.acknowledged(self.index, &acked);
                        acked.clear();
                    }
                    _ = tick.tick(), if stopping.is_none() => {
                        let due_total = (start.elapsed().as_secs_f64() * self.rate) as u64;
                        let mut due = due_total.saturating_sub(slots);
                        if due > max_backlog {
                            slots += due - max_backlog;
                            due = max_backlog;
                        }
                        let room = if acked_qos { WINDOW.saturating_sub(inflight.len()) as u64 } else { due };
                        for _ in 0..due.min(room) {
                            let subtopic = (seq % topics.len() as u64) as usize;
                            let pkid = if acked_qos {
                                last_pkid = next_free_pkid(last_pkid, &inflight);
                                let awaiting = if self.spec.qos == QoS::AtLeastOnce { Awaiting::Ack } else { Awaiting::Received };
                                inflight.insert(last_pkid, Outgoing { seq, subtopic, awaiting });
                                last_pkid
                            } else {
                                0
                            };
                            self.publish(topics[subtopic].clone(), pkid, seq, false).write(&mut wbuf)?;
                            bump(&run.counters.published[self.spec.qos as usize]);
                            seq += 1;
                            slots += 1;
                        }
                    }
                }
            }
        }
    }

    fn publish(&self, topic: ByteString, pkid: u16, seq: u64, dup: bool) -> Packet {
        let mut payload = [0u8; PAYLOAD];
        payload[..8].copy_from_slice(&now_ns().to_be_bytes());
        payload[8..12].copy_from_slice(&(self.index as u32).to_be_bytes());
        payload[12..HEADER_LEN].copy_from_slice(&seq.to_be_bytes());
        Packet::Publish(Publish {
            dup,
            qos: self.spec.qos,
            retain: false,
            topic,
            pkid,
            payload: Bytes::copy_from_slice(&payload),
        })
    }

    /// One packet from the broker: moves the QoS flow of the message it acknowledges on.
    fn on_ack(
        &self,
        packet: Packet,
        inflight: &mut BTreeMap<u16, Outgoing>,
        acked: &mut Vec<u64>,
        wbuf: &mut BytesMut,
        client_id: &str,
    ) -> anyhow::Result<()> {
        match packet {
            Packet::PubAck(ack) => match inflight.get(&ack.pkid) {
                Some(out) if out.awaiting == Awaiting::Ack => {
                    acked.push(out.seq);
                    inflight.remove(&ack.pkid);
                }
                _ => self.anomaly(client_id, format!("PUBACK for packet id {} not awaiting one", ack.pkid)),
            },
            Packet::PubRec(rec) => match inflight.get_mut(&rec.pkid) {
                Some(out) if out.awaiting == Awaiting::Received => {
                    acked.push(out.seq);
                    out.awaiting = Awaiting::Complete;
                    Packet::PubRel(PubRel { pkid: rec.pkid }).write(wbuf)?;
                }
                // A PUBREC again (our PUBREL crossed a reconnect): release again.
                Some(out) if out.awaiting == Awaiting::Complete => {
                    Packet::PubRel(PubRel { pkid: rec.pkid }).write(wbuf)?
                }
                _ => self.anomaly(client_id, format!("PUBREC for packet id {} not awaiting one", rec.pkid)),
            },
            Packet::PubComp(comp) => match inflight.get(&comp.pkid) {
                Some(out) if out.awaiting == Awaiting::Complete => {
                    inflight.remove(&comp.pkid);
                }
                _ => self.anomaly(client_id, format!("PUBCOMP for packet id {} not awaiting one", comp.pkid)),
            },
            other => self.anomaly(client_id, format!("unexpected {other:?}")),
        }
        Ok(())
    }

    fn anomaly(&self, client_id: &str, what: String) {
        bump(&self.run.counters.protocol_anomalies);
        self.run.note(format!("{client_id}: {what}"));
    }
}

/// The next packet id after `last` that no message in flight uses (never 0).
fn next_free_pkid(last: u16, inflight: &BTreeMap<u16, Outgoing>) -> u16 {
    let mut pkid = last;
    loop {
        pkid = pkid.checked_add(1).unwrap_or(1);
        if !inflight.contains_key(&pkid) {
            return pkid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_those_in_flight_and_zero() {
        let out = Outgoing { seq: 0, subtopic: 0, awaiting: Awaiting::Ack };
        let inflight: BTreeMap<u16, Outgoing> = [(1, out), (2, out), (u16::MAX, out)].into_iter().collect();
        assert_eq!(next_free_pkid(0, &inflight), 3);
        assert_eq!(next_free_pkid(u16::MAX - 1, &inflight), 3);
    }
}
