//! Message-flow scenarios (fan-in, fan-out, pairs, latency): publishers and subscribers on
//! their own connections, one task each, counting what is delivered to the subscribers.
//!
//! Every payload starts with a 20-byte header: the send time (ns since the bench started, one
//! clock for both sides since publishers and subscribers live in this process), the publisher's
//! index and its sequence number. Subscribers record the latency of each message and each
//! publisher's progress (the highest sequence number seen + 1, summed over subscribers).
//!
//! Flow control of the publishers, so that the figures measure delivery and not queueing:
//! - QoS 0 at full speed: a publisher stays at most `ahead` messages in front of the average
//!   subscriber's progress (a lost message does not block it: progress is a position, not a
//!   count);
//! - QoS 1: at most `window` unacknowledged PUBLISHes per publisher;
//! - paced (latency): a tokio interval per publisher, plus the QoS 1 window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use amqtt_protocol::{ByteString, Packet, PubAck, PubComp, PubRec, Publish, QoS};
use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::client::Conn;
use crate::histogram::Histogram;
use crate::monitor::Monitor;
use crate::report::{Latency, Report};

/// Bytes at the start of every payload: timestamp (u64), publisher index (u32), sequence (u64).
pub const HEADER_LEN: usize = 20;
/// Most PUBLISHes encoded into one write.
const MAX_BATCH: u64 = 256;
/// Read buffer of a subscriber.
const SUBSCRIBER_READ_CHUNK: usize = 64 * 1024;
/// The drain ends when nothing was delivered for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// ... or after this long at most (a slow broker, e.g. aMQTT in fan-out, needs many seconds to
/// deliver what the publishers were allowed to send ahead).
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// A QoS 0 publisher held back by `ahead` for this long without any progress writes its
/// outstanding messages off as lost.
const STALL: Duration = Duration::from_millis(500);
/// How long QoS 1 publishers wait for their last PUBACKs after the run.
const ACK_WAIT: Duration = Duration::from_secs(5);

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the bench started: the timestamp in every payload.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What a flow scenario is made of.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// e.g. `fanin-qos0`.
    pub scenario: String,
    pub qos: QoS,
    /// One topic per publisher.
    pub publishers: Vec<String>,
    /// One filter per subscriber (each subscribes at `qos`).
    pub subscribers: Vec<String>,
    /// How many subscribers each message reaches.
    pub deliveries_per_message: u64,
    /// Messages per second per publisher; `None` = as fast as flow control allows.
    pub rate: Option<u32>,
    /// Subscribers connect with clean session 0 (a fixed client id per subscriber), so that the
    /// broker stores each message for them: what persistence costs.
    pub persistent_subscribers: bool,
}

/// The knobs every scenario shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub duration: Duration,
    pub payload: usize,
    pub window: u32,
    pub ahead: u64,
    pub broker_pid: Option<u32>,
    pub label: String,
    /// Distinguishes the client ids and topics of this bench process from any other's.
    pub run_id: String,
}

/// State shared by the publishers, the subscribers and the driver. Counters are updated once
/// per batch, not per message.
pub(crate) struct Shared {
    pub(crate) sent: Vec<AtomicU64>,
    pub(crate) acked: Vec<AtomicU64>,
    /// Per publisher: the sum over subscribers of (highest sequence seen + 1).
    progress: Vec<AtomicU64>,
    /// Per publisher: woken when its progress moves.
    progressed: Vec<Notify>,
    pub(crate) delivered: AtomicU64,
    pub(crate) last_delivery_ns: AtomicU64,
}

impl Shared {
    pub(crate) fn new(publishers: usize) -> Shared {
        let counters = || (0..publishers).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Shared {
            sent: counters(),
            acked: counters(),
            progress: counters(),
            progressed: (0..publishers).map(|_| Notify::new()).collect(),
            delivered: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn total(counters: &[AtomicU64]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Default)]
pub(crate) struct SubscriberStats {
    pub(crate) latency: Histogram,
    pub(crate) out_of_order: u64,
}

pub async fn run(spec: &FlowSpec, settings: &Settings) -> anyhow::Result<Report> {
    if settings.payload < HEADER_LEN {
        bail!("--payload must be at least {HEADER_LEN} bytes (timestamp, publisher, sequence)");
    }
    now_ns();
    let shared = Arc::new(Shared::new(spec.publishers.len()));
    let id = |role: &str, i: usize| format!("bench-{}-{}-{role}{i}", settings.run_id, spec.scenario);

    // Subscribers first (all subscribed before anyone publishes), then publishers.
    let persistent = spec.persistent_subscribers;
    let mut subscribers = Vec::with_capacity(spec.subscribers.len());
    for (i, filter) in spec.subscribers.iter().enumerate() {
        let (addr, client_id, filter, qos) = (settings.addr, id("s", i), filter.clone(), spec.qos);
        subscribers.push(tokio::spawn(async move {
            if persistent {
                // A clean connection first discards whatever session a client of that id left.
                Conn::connect(addr, &client_id).await?.disconnect().await;
            }
            let mut conn = Conn::connect_with(addr, &client_id, !persistent).await?;
            conn.subscribe(&filter, qos).await?;
            anyhow::Ok(conn)
        }));
    }
    let mut sub_conns = Vec::with_capacity(subscribers.len());
    for task in subscribers {
        sub_conns.push(task.await??);
    }
    let mut pub_conns = Vec::with_capacity(spec.publishers.len());
    for i in 0..spec.publishers.len() {
        pub_conns.push(Conn::connect(settings.addr, &id("p", i)).await?);
    }

    let monitor = Monitor::start(settings.broker_pid)?;
    let start = Instant::now();
    let start_ns = now_ns();
    let end = start + settings.duration;
    let cancel = CancellationToken::new();
    let n_pubs = spec.publishers.len();

    let sub_tasks: Vec<_> = sub_conns
        .into_iter()
        .map(|conn| tokio::spawn(subscriber(conn, n_pubs, shared.clone(), cancel.clone())))
        .collect();
    let pub_tasks: Vec<_> = pub_conns
        .into_iter()
        .zip(&spec.publishers)
        .enumerate()
        .map(|(i, (conn, topic))| {
            let publisher = Publisher {
                index: i,
                topic: topic.clone(),
                qos: spec.qos,
                rate: spec.rate,
                fanout: spec.deliveries_per_message.max(1),
                payload: settings.payload,
                window: settings.window.max(1),
                ahead: settings.ahead.max(1),
                end,
            };
            tokio::spawn(publisher.run(conn, shared.clone()))
        })
        .collect();

    let mut error = None;
    let mut conns = Vec::new();
    for task in pub_tasks {
        // Publishers stop at `end` and wait at most ACK_WAIT for PUBACKs; more means the broker
        // stopped reading them.
        let limit = (end + ACK_WAIT + Duration::from_secs(5)).saturating_duration_since(Instant::now());
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(conn))) => conns.push(conn),
            Ok(Ok(Err(e))) => error = error.or(Some(format!("publisher: {e:#}"))),
            Ok(Err(e)) => error = error.or(Some(format!("publisher: {e}"))),
            Err(_) => error = error.or(Some("publisher blocked: the broker stopped reading".to_owned())),
        }
    }

    // Drain: until every owed delivery arrived, or nothing arrived for DRAIN_QUIET.
    let expected = |shared: &Shared| -> u64 {
        let owed = if spec.qos == QoS::AtMostOnce { Shared::total(&shared.sent) } else { Shared::total(&shared.acked) };
        owed * spec.deliveries_per_message
    };
    let drain_start = Instant::now();
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered >= expected(&shared) || drain_start.elapsed() >= DRAIN_MAX {
            break;
        }
        if delivered != last.0 {
            last = (delivered, Instant::now());
        } else if last.1.elapsed() >= DRAIN_QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_cut = shared.delivered.load(Ordering::Relaxed) < expected(&shared) && drain_start.elapsed() >= DRAIN_MAX;
    if drain_cut {
        error = error.or(Some(format!(
            "deliveries still arriving after a {DRAIN_MAX:?} drain: lost includes messages still queued"
        )));
    }
    cancel.cancel();
    let mut latency = Histogram::default();
    let mut out_of_order = 0;
    for task in sub_tasks {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok((stats, conn)))) => {
                latency.merge(&stats.latency);
                out_of_order += stats.out_of_order;
                conns.push(conn);
            }
            Ok(Ok(Err(e))) => error = error.or(Some(format!("subscriber: {e:#}"))),
            Ok(Err(e)) => error = error.or(Some(format!("subscriber: {e}"))),
            Err(_) => error = error.or(Some("subscriber did not stop".to_owned())),
        }
    }
    let (broker, usage) = monitor.finish().await;
    for conn in conns {
        conn.disconnect().await;
    }
    if persistent {
        // Leave the broker as we found it: a clean connection ends each persistent session.
        let cleanups: Vec<_> = (0..spec.subscribers.len())
            .map(|i| {
                let (addr, client_id) = (settings.addr, id("s", i));
                tokio::spawn(async move {
                    if let Ok(conn) = Conn::connect(addr, &client_id).await {
                        conn.disconnect().await;
                    }
                })
            })
            .collect();
        for task in cleanups {
            let _ = task.await;
        }
    }

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let expected = expected(&shared);
    let last_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    let elapsed_s =
        if last_ns > start_ns { (last_ns - start_ns) as f64 / 1e9 } else { settings.duration.as_secs_f64() };
    let us = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1e3;
    Ok(Report {
        scenario: spec.scenario.clone(),
        label: settings.label.clone(),
        qos: Some(spec.qos as u8),
        publishers: spec.publishers.len(),
        subscribers: spec.subscribers.len(),
        payload: settings.payload,
        duration_s: settings.duration.as_secs_f64(),
        elapsed_s,
        sent: Shared::total(&shared.sent),
        acked: (spec.qos != QoS::AtMostOnce).then(|| Shared::total(&shared.acked)),
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        out_of_order,
        rate: delivered as f64 / elapsed_s,
        latency: (latency.count() > 0).then(|| Latency {
            p50_us: us(latency.quantile(0.5)),
            p99_us: us(latency.quantile(0.99)),
            max_us: latency.max() as f64 / 1e3,
        }),
        broker,
        bench_cpu_s: usage.bench_cpu_s,
        other_load: Some(usage.other_cpu_s / usage.wall_s),
        connections: None,
        slow: None,
        error,
    })
}

struct Publisher {
    index: usize,
    topic: String,
    qos: QoS,
    rate: Option<u32>,
    fanout: u64,
    payload: usize,
    window: u32,
    ahead: u64,
    end: Instant,
}

impl Publisher {
    async fn run(self, mut conn: Conn, shared: Arc<Shared>) -> anyhow::Result<Conn> {
        let acked_qos = self.qos != QoS::AtMostOnce;
        let mut messages = MessageWriter::new(&self.topic, self.qos, self.payload, self.index)?;
        let mut in_flight = 0u32;
        let mut written_off = 0u64;
        let mut interval = self.rate.map(|rate| {
            let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / u64::from(rate.max(1))));
            interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
            interval
        });
        let end = tokio::time::Instant::from_std(self.end);
        // Send when a quarter of the allowance is free, not at every single message it frees:
        // fewer, larger writes (and wake-ups) on both sides, the bound unchanged.
        let min_batch = (self.ahead / 4).clamp(1, MAX_BATCH);
        let min_batch_acked = (self.window / 4).max(1);
        let progress = &shared.progress[self.index];
        let progressed = &shared.progressed[self.index];

        while Instant::now() < self.end {
            let n = if let Some(interval) = interval.as_mut() {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = tokio::time::sleep_until(end) => continue,
                    read = conn.fill(), if acked_qos => {
                        read?;
                        in_flight -= self.take_acks(&mut conn, &shared)?;
                        continue;
                    }
                }
                if acked_qos && in_flight >= self.window {
                    continue; // window full: skip this tick
                }
                1
            } else if acked_qos {
                let free = self.window.saturating_sub(in_flight);
                if free < min_batch_acked {
                    tokio::select! {
                        read = conn.fill() => {
                            read?;
                            in_flight -= self.take_acks(&mut conn, &shared)?;
                        }
                        _ = tokio::time::sleep_until(end) => {}
                    }
                    continue;
                }
                u64::from(free).min(MAX_BATCH)
            } else {
                let position = (progress.load(Ordering::Acquire) / self.fanout).max(written_off);
                let allowed = self.ahead.saturating_sub(messages.seq.saturating_sub(position));
                if allowed < min_batch {
                    let before = progress.load(Ordering::Relaxed);
                    tokio::select! {
                        _ = progressed.notified() => {}
                        _ = tokio::time::sleep(STALL) => {
                            // Nothing more arrives: the broker dropped our latest messages
                            // (QoS 0), and no later one will move the position. Write them off.
                            if progress.load(Ordering::Relaxed) == before {
                                written_off = messages.seq;
                            }
                        }
                        _ = tokio::time::sleep_until(end) => {}
                    }
                    continue;
                }
                allowed.min(MAX_BATCH)
            };

            conn.stream.write_all(messages.next_batch(n)).await?;
            shared.sent[self.index].fetch_add(n, Ordering::Relaxed);
            if acked_qos {
                in_flight += n as u32;
                // Collect whatever PUBACKs have arrived, without waiting.
                conn.fill_available()?;
                in_flight -= self.take_acks(&mut conn, &shared)?;
            }
        }

        // Wait for the acknowledgements still owed, for a while.
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        while in_flight > 0 {
            tokio::select! {
                read = conn.fill() => {
                    read?;
                    in_flight -= self.take_acks(&mut conn, &shared)?;
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(conn)
    }

    /// Decodes the buffered acknowledgements; returns how many PUBLISHes they complete.
    fn take_acks(&self, conn: &mut Conn, shared: &Shared) -> anyhow::Result<u32> {
        let mut done = 0u32;
        while let Some(frame) = conn.next_frame()? {
            if let Packet::PubAck(_) = Packet::read(frame)? {
                done += 1;
            }
        }
        shared.acked[self.index].fetch_add(u64::from(done), Ordering::Relaxed);
        Ok(done)
    }
}

/// A publisher's messages: one PUBLISH encoded by the protocol crate, copied per message with
/// its packet id and payload header (timestamp, publisher, seq) patched in place, so that
/// encoding costs the bench almost nothing.
pub(crate) struct MessageWriter {
    template: BytesMut,
    payload_at: usize,
    acked: bool,
    publisher: u32,
    /// The seq the next message gets.
    pub(crate) seq: u64,
    pkid: u16,
    wbuf: BytesMut,
}

impl MessageWriter {
    pub(crate) fn new(topic: &str, qos: QoS, payload: usize, publisher: usize) -> anyhow::Result<MessageWriter> {
        let acked = qos != QoS::AtMostOnce;
        let mut template = BytesMut::new();
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteString::from(topic),
            pkid: if acked { 1 } else { 0 },
            payload: Bytes::from(vec![0u8; payload]),
        })
        .write(&mut template)?;
        let payload_at = template.len() - payload;
        let wbuf = BytesMut::with_capacity(template.len() * MAX_BATCH as usize);
        Ok(MessageWriter { template, payload_at, acked, publisher: publisher as u32, seq: 0, pkid: 0, wbuf })
    }

    /// The next `n` messages, all stamped now, ready to be written.
    pub(crate) fn next_batch(&mut self, n: u64) -> &[u8] {
        let (payload_at, timestamp) = (self.payload_at, now_ns());
        self.wbuf.clear();
        for _ in 0..n {
            let at = self.wbuf.len();
            self.wbuf.extend_from_slice(&self.template);
            if self.acked {
                self.pkid = self.pkid.checked_add(1).unwrap_or(1);
                self.wbuf[at + payload_at - 2..at + payload_at].copy_from_slice(&self.pkid.to_be_bytes());
            }
            let header = &mut self.wbuf[at + payload_at..at + payload_at + HEADER_LEN];
            header[..8].copy_from_slice(&timestamp.to_be_bytes());
            header[8..12].copy_from_slice(&self.publisher.to_be_bytes());
            header[12..20].copy_from_slice(&self.seq.to_be_bytes());
            self.seq += 1;
        }
        &self.wbuf
    }
}

/// Reads and counts deliveries (acknowledging QoS 1/2) until `cancel`; returns the connection.
pub(crate) async fn subscriber(
    mut conn: Conn,
    n_pubs: usize,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> anyhow::Result<(SubscriberStats, Conn)> {
    let mut stats = SubscriberStats::default();
    // Per publisher: the next sequence number expected, and how far it moved in this batch.
    let mut next_seq = vec![0u64; n_pubs];
    let mut moved = vec![0u64; n_pubs];
    let mut replies = BytesMut::new();
    loop {
        if conn.rbuf.capacity() - conn.rbuf.len() < SUBSCRIBER_READ_CHUNK / 4 {
            conn.rbuf.reserve(SUBSCRIBER_READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            read = conn.fill() => { read.context("subscriber")?; }
        }
        let now = now_ns();
        let mut count = 0u64;
        while let Some(frame) = conn.next_frame()? {
            let publish = match Packet::read(frame)? {
                Packet::Publish(publish) => publish,
                Packet::PubRel(rel) => {
                    Packet::PubComp(PubComp { pkid: rel.pkid }).write(&mut replies)?;
                    continue;
                }
                _ => continue,
            };
            count += 1;
            match publish.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => Packet::PubAck(PubAck { pkid: publish.pkid }).write(&mut replies)?,
                QoS::ExactlyOnce => Packet::PubRec(PubRec { pkid: publish.pkid }).write(&mut replies)?,
            }
            let Some(header) = publish.payload.get(..HEADER_LEN) else { continue };
            let field = |range: std::ops::Range<usize>| header[range].iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
            let (sent_ns, publisher, seq) = (field(0..8), field(8..12) as usize, field(12..20));
            stats.latency.record(now.saturating_sub(sent_ns));
            if let Some(next) = next_seq.get_mut(publisher) {
                if seq >= *next {
                    moved[publisher] += seq + 1 - *next;
                    *next = seq + 1;
                } else {
                    stats.out_of_order += 1;
                }
            }
        }
        if !replies.is_empty() {
            conn.stream.write_all(&replies).await?;
            replies.clear();
        }
        for (publisher, moved) in moved.iter_mut().enumerate() {
            if *moved > 0 {
                shared.progress[publisher].fetch_add(*moved, Ordering::Release);
                shared.progressed[publisher].notify_one();
                *moved = 0;
            }
        }
        if count > 0 {
            shared.delivered.fetch_add(count, Ordering::Relaxed);
            shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        }
    }
    Ok((stats, conn))
}
