//! The slow-consumer scenario (issue 9): paced publishers (`--rate` msg/s in all) to K
//! subscribers on a wildcard, run twice against one broker: phase 1 as is, phase 2 with one
//! more subscriber on the same filter that subscribes and then never reads its socket. A broker
//! whose per-session limits hold keeps that subscriber's backlog bounded (its queue, then
//! drops) and goes on delivering to the others at the same rate; one that queues without limit
//! grows, and one that lets the stalled client hold its publishers back delivers less to
//! everyone.
//!
//! Publishers are paced as real-time sources: every millisecond each sends what has become due,
//! catching up at most MAX_CATCH_UP of lateness; slots it was held back from for longer (by the
//! broker not reading, or by a full QoS 1 window) are skipped and counted, so that a stall shows
//! as lower throughput rather than as a burst afterwards.
//!
//! Drops are seen two ways. From outside, as what the stalled subscriber did not get: after
//! phase 2 it reads again, drains what the broker kept for it, and what it was owed (sent at
//! QoS 0, acknowledged at QoS 1) minus what it received is what the broker dropped for it. And,
//! with `--sys-interval`, as the broker counts them: the rise of
//! `$SYS/broker/publish/messages/dropped` (Mosquitto's topic, also amqtt-rs's) over phase 2.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqtt_protocol::{Packet, PubAck, QoS};
use anyhow::bail;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::client::Conn;
use crate::flow::{self, now_ns, MessageWriter, Settings, Shared, HEADER_LEN};
use crate::histogram::Histogram;
use crate::monitor::{Monitor, Usage};
use crate::report::{BrokerFigures, Latency, Report, SlowConsumerFigures};

/// How often a paced publisher sends what is due.
const TICK: Duration = Duration::from_millis(1);
/// Lateness a paced publisher makes up for; beyond it, slots are skipped.
const MAX_CATCH_UP: Duration = Duration::from_millis(10);
/// Most PUBLISHes encoded into one write.
const MAX_BATCH: u64 = 256;
/// How long QoS 1 publishers wait for their last PUBACKs after the run.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The drains end when nothing arrived for this long, or after DRAIN_MAX.
const DRAIN_QUIET: Duration = Duration::from_secs(1);
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Where the broker publishes its count of dropped messages (Mosquitto's topic name).
pub const DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";

#[derive(Debug, Clone, Copy)]
pub struct SlowSpec {
    pub qos: QoS,
    pub publishers: usize,
    /// Subscribers that read (the stalled one comes on top in phase 2).
    pub subscribers: usize,
    /// Messages per second, all publishers together.
    pub rate: f64,
    /// Fails below this ratio of phase 2's delivered rate to phase 1's.
    pub min_ratio: f64,
    /// Fails when phase 2's peak RSS exceeds phase 1's by more than this.
    pub max_rss_growth_kib: u64,
    /// The broker's `$SYS` interval: Some to read its drop counter (see the module docs).
    pub sys_interval: Option<Duration>,
}

/// One phase's figures.
#[derive(Debug, Default)]
struct Phase {
    sent: u64,
    acked: u64,
    /// Slots the publishers could not use on time (held back).
    skipped: u64,
    /// Deliveries to the reading subscribers, all of them.
    delivered: u64,
    /// What each reading subscriber was owed.
    owed: u64,
    /// Delivered per second per reading subscriber.
    rate: f64,
    elapsed_s: f64,
    latency: Histogram,
    broker: Option<BrokerFigures>,
    usage: Usage,
    /// The stalled subscriber (phase 2): owed, received once it read again.
    stalled: Option<(u64, u64)>,
    /// The rise of the broker's `$SYS` drop counter over the phase, when it publishes one.
    broker_dropped: Option<u64>,
    error: Option<String>,
}

pub async fn run(spec: &SlowSpec, settings: &Settings) -> anyhow::Result<Report> {
    if settings.payload < HEADER_LEN {
        bail!("--payload must be at least {HEADER_LEN} bytes (timestamp, publisher, sequence)");
    }
    if spec.publishers == 0 || spec.subscribers == 0 || !(spec.rate > 0.0 && spec.rate.is_finite()) {
        bail!("slow-consumer needs publishers, subscribers and a positive rate");
    }
    let baseline = phase(spec, settings, false).await?;
    let stalled = phase(spec, settings, true).await?;

    let ratio = if baseline.rate > 0.0 { stalled.rate / baseline.rate } else { 0.0 };
    let peak = |p: &Phase| p.broker.map(|b| b.peak_rss_kib);
    let growth = match (peak(&baseline), peak(&stalled)) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    };
    let (stalled_owed, stalled_received) = stalled.stalled.unwrap_or_default();
    let mut failures = Vec::new();
    if ratio < spec.min_ratio {
        failures.push(format!(
            "the reading subscribers got {:.0} msg/s each with a stalled subscriber, {:.0} without: ratio {ratio:.3} < {}",
            stalled.rate, baseline.rate, spec.min_ratio
        ));
    }
    if let Some(growth) = growth.filter(|&g| g > spec.max_rss_growth_kib as i64) {
        failures.push(format!(
            "the broker's peak RSS grew by {:.1} MiB with a stalled subscriber (bound {:.1} MiB)",
            growth as f64 / 1024.0,
            spec.max_rss_growth_kib as f64 / 1024.0
        ));
    }
    let lost = |p: &Phase| (p.owed * spec.subscribers as u64).saturating_sub(p.delivered);
    if spec.qos != QoS::AtMostOnce && lost(&stalled) > 0 {
        failures.push(format!("the reading subscribers lost {} acknowledged QoS 1 messages", lost(&stalled)));
    }
    // Every message a subscriber missed was dropped by the broker, which must have counted it.
    let missed = stalled_owed.saturating_sub(stalled_received) + lost(&stalled);
    if let Some(counted) = stalled.broker_dropped.filter(|&counted| counted != missed) {
        failures.push(format!(
            "the broker's {DROPPED_TOPIC} rose by {counted} over phase 2, but the subscribers missed {missed} messages"
        ));
    }
    let error = baseline
        .error
        .clone()
        .map(|e| format!("phase 1: {e}"))
        .or(stalled.error.clone().map(|e| format!("phase 2: {e}")));
    if let Some(error) = &error {
        failures.push(error.clone());
    }
    let us = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e3);
    let load = |p: &Phase| p.usage.other_cpu_s / p.usage.wall_s.max(1e-9);
    Ok(Report {
        scenario: format!("slow-consumer-qos{}", spec.qos as u8),
        label: settings.label.clone(),
        qos: Some(spec.qos as u8),
        publishers: spec.publishers,
        subscribers: spec.subscribers,
        payload: settings.payload,
        duration_s: settings.duration.as_secs_f64(),
        elapsed_s: stalled.elapsed_s,
        sent: stalled.sent,
        acked: (spec.qos != QoS::AtMostOnce).then_some(stalled.acked),
        expected: stalled.owed * spec.subscribers as u64,
        delivered: stalled.delivered,
        lost: lost(&stalled),
        out_of_order: 0,
        rate: stalled.rate * spec.subscribers as f64,
        latency: (stalled.latency.count() > 0).then(|| Latency {
            p50_us: us(stalled.latency.quantile(0.5)).unwrap_or(0.0),
            p99_us: us(stalled.latency.quantile(0.99)).unwrap_or(0.0),
            max_us: stalled.latency.max() as f64 / 1e3,
        }),
        broker: stalled.broker,
        bench_cpu_s: baseline.usage.bench_cpu_s + stalled.usage.bench_cpu_s,
        other_load: Some(load(&baseline).max(load(&stalled))),
        connections: None,
        slow: Some(SlowConsumerFigures {
            target_rate: spec.rate,
            baseline_rate: baseline.rate,
            stalled_rate: stalled.rate,
            ratio,
            min_ratio: spec.min_ratio,
            baseline_sent_rate: baseline.sent as f64 / settings.duration.as_secs_f64(),
            stalled_sent_rate: stalled.sent as f64 / settings.duration.as_secs_f64(),
            baseline_skipped: baseline.skipped,
            stalled_skipped: stalled.skipped,
            baseline_lost: lost(&baseline),
            stalled_lost: lost(&stalled),
            baseline_p99_us: us(baseline.latency.quantile(0.99)),
            stalled_p99_us: us(stalled.latency.quantile(0.99)),
            baseline_peak_rss_kib: peak(&baseline),
            stalled_peak_rss_kib: peak(&stalled),
            rss_growth_kib: growth,
            max_rss_growth_kib: spec.max_rss_growth_kib,
            stalled_owed,
            stalled_received,
            broker_dropped: stalled.broker_dropped,
            failures,
        }),
        error,
    })
}

/// One phase: connect, publish for `settings.duration`, drain, measure.
async fn phase(spec: &SlowSpec, settings: &Settings, with_stalled: bool) -> anyhow::Result<Phase> {
    let tag = if with_stalled { "stalled" } else { "baseline" };
    let root = format!("bench/{}/slow-qos{}/{tag}", settings.run_id, spec.qos as u8);
    let filter = format!("{root}/+");
    let id = |role: &str, i: usize| format!("bench-{}-slow{}-{tag}-{role}{i}", settings.run_id, spec.qos as u8);

    let mut subscribing = Vec::new();
    for i in 0..spec.subscribers + usize::from(with_stalled) {
        let (addr, client_id, filter, qos) = (settings.addr, id("s", i), filter.clone(), spec.qos);
        subscribing.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr, &client_id).await?;
            conn.subscribe(&filter, qos).await?;
            anyhow::Ok(conn)
        }));
    }
    let mut sub_conns = Vec::new();
    for task in subscribing {
        sub_conns.push(task.await??);
    }
    // The last one, in phase 2, never reads until the phase is over.
    let stalled_conn = if with_stalled { sub_conns.pop() } else { None };
    let mut pub_conns = Vec::new();
    for i in 0..spec.publishers {
        pub_conns.push(Conn::connect(settings.addr, &id("p", i)).await?);
    }

    let sys = match spec.sys_interval.filter(|_| with_stalled) {
        Some(interval) => Some(DropWatch::start(settings.addr, &id("sys", 0), interval).await?),
        None => None,
    };
    let dropped_before = match &sys {
        Some(sys) => sys.latest().await,
        None => None,
    };
    let shared = Arc::new(Shared::new(spec.publishers));
    let monitor = Monitor::start(settings.broker_pid)?;
    let start = Instant::now();
    let start_ns = now_ns();
    let end = start + settings.duration;
    let cancel = CancellationToken::new();
    let sub_tasks: Vec<_> = sub_conns
        .into_iter()
        .map(|conn| tokio::spawn(flow::subscriber(conn, spec.publishers, shared.clone(), cancel.clone())))
        .collect();
    let pub_tasks: Vec<_> = pub_conns
        .into_iter()
        .enumerate()
        .map(|(index, conn)| {
            let publisher = Paced {
                index,
                topic: format!("{root}/{index}"),
                qos: spec.qos,
                rate: spec.rate / spec.publishers as f64,
                payload: settings.payload,
                window: settings.window.max(1),
                start,
                end,
            };
            tokio::spawn(publisher.run(conn, shared.clone()))
        })
        .collect();

    let mut phase = Phase::default();
    let mut conns = Vec::new();
    for task in pub_tasks {
        let limit = (end + ACK_WAIT + Duration::from_secs(5)).saturating_duration_since(Instant::now());
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok((conn, skipped)))) => {
                phase.skipped += skipped;
                conns.push(conn);
            }
            Ok(Ok(Err(e))) => phase.error = phase.error.or(Some(format!("publisher: {e:#}"))),
            Ok(Err(e)) => phase.error = phase.error.or(Some(format!("publisher: {e}"))),
            Err(_) => phase.error = phase.error.or(Some("publisher blocked: the broker stopped reading".to_owned())),
        }
    }
    let owed = |shared: &Shared| {
        if spec.qos == QoS::AtMostOnce {
            Shared::total(&shared.sent)
        } else {
            Shared::total(&shared.acked)
        }
    };
    let expected = owed(&shared) * spec.subscribers as u64;
    wait_for(|| shared.delivered.load(Ordering::Relaxed), expected).await;
    cancel.cancel();
    for task in sub_tasks {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok((stats, conn)))) => {
                phase.latency.merge(&stats.latency);
                conns.push(conn);
            }
            Ok(Ok(Err(e))) => phase.error = phase.error.or(Some(format!("subscriber: {e:#}"))),
            Ok(Err(e)) => phase.error = phase.error.or(Some(format!("subscriber: {e}"))),
            Err(_) => phase.error = phase.error.or(Some("subscriber did not stop".to_owned())),
        }
    }
    // Measured before the stalled subscriber reads again: its backlog is in the peak.
    (phase.broker, phase.usage) = monitor.finish().await;
    phase.sent = Shared::total(&shared.sent);
    phase.acked = Shared::total(&shared.acked);
    phase.owed = owed(&shared);
    phase.delivered = shared.delivered.load(Ordering::Relaxed);
    let last_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    phase.elapsed_s =
        if last_ns > start_ns { (last_ns - start_ns) as f64 / 1e9 } else { settings.duration.as_secs_f64() };
    phase.rate = phase.delivered as f64 / spec.subscribers as f64 / phase.elapsed_s;
    if let Some(conn) = stalled_conn {
        let (received, conn) = drain_stalled(conn, phase.owed).await;
        phase.stalled = Some((phase.owed, received));
        conns.extend(conn);
    }
    if let Some(sys) = sys {
        let after = sys.next().await;
        phase.broker_dropped = dropped_before.zip(after).map(|(before, after)| after.saturating_sub(before));
        conns.extend(sys.stop().await);
    }
    for conn in conns {
        conn.disconnect().await;
    }
    Ok(phase)
}

/// Waits until `count()` reaches `target`, or stops moving for DRAIN_QUIET, or DRAIN_MAX.
async fn wait_for(count: impl Fn() -> u64, target: u64) {
    let start = Instant::now();
    let mut last = (count(), Instant::now());
    while last.0 < target && start.elapsed() < DRAIN_MAX && last.1.elapsed() < DRAIN_QUIET {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = count();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

/// The stalled subscriber reads again: counts the PUBLISHes the broker kept for it
/// (acknowledging QoS 1 ones, so the rest of its queue follows) until `owed` or a quiet pause.
async fn drain_stalled(mut conn: Conn, owed: u64) -> (u64, Option<Conn>) {
    let start = Instant::now();
    let mut received = 0u64;
    let mut acks = BytesMut::new();
    while received < owed && start.elapsed() < DRAIN_MAX {
        match tokio::time::timeout(DRAIN_QUIET, conn.fill()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return (received, None),
            Err(_) => break,
        }
        loop {
            let frame = match conn.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return (received, None),
            };
            if let Ok(Packet::Publish(publish)) = Packet::read(frame) {
                received += 1;
                if publish.qos == QoS::AtLeastOnce {
                    let _ = Packet::PubAck(PubAck { pkid: publish.pkid }).write(&mut acks);
                }
            }
        }
        if !acks.is_empty() {
            if conn.stream.write_all(&acks).await.is_err() {
                return (received, None);
            }
            acks.clear();
        }
    }
    (received, Some(conn))
}

/// A connection subscribed to the broker's `$SYS` drop counter, keeping its latest value.
struct DropWatch {
    values: watch::Receiver<Option<(u64, Instant)>>,
    interval: Duration,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Conn>,
}

impl DropWatch {
    async fn start(addr: std::net::SocketAddr, client_id: &str, interval: Duration) -> anyhow::Result<DropWatch> {
        let mut conn = Conn::connect(addr, client_id).await?;
        conn.subscribe(DROPPED_TOPIC, QoS::AtMostOnce).await?;
        let (tx, values) = watch::channel(None);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    read = conn.fill() => if read.is_err() { break },
                }
                while let Ok(Some(frame)) = conn.next_frame() {
                    if let Ok(Packet::Publish(publish)) = Packet::read(frame) {
                        let value = std::str::from_utf8(&publish.payload).ok().and_then(|v| v.trim().parse().ok());
                        if let (true, Some(value)) = (&*publish.topic == DROPPED_TOPIC, value) {
                            let _ = tx.send(Some((value, Instant::now())));
                        }
                    }
                }
            }
            conn
        });
        Ok(DropWatch { values, interval, cancel, task })
    }

    /// The latest value, waiting up to one interval (and a second) for the first.
    async fn latest(&self) -> Option<u64> {
        self.after(None, self.interval + Duration::from_secs(1)).await
    }

    /// The first value published from now on (up to two intervals and a second): it counts
    /// every drop made before now. Without one, the latest: a broker that publishes a `$SYS`
    /// topic only when it changes (Mosquitto) has nothing new to say.
    async fn next(&self) -> Option<u64> {
        let fresh = self.after(Some(Instant::now()), self.interval * 2 + Duration::from_secs(1)).await;
        fresh.or_else(|| self.values.borrow().map(|(value, _)| value))
    }

    async fn after(&self, since: Option<Instant>, wait: Duration) -> Option<u64> {
        let mut values = self.values.clone();
        let fresh = |v: &Option<(u64, Instant)>| v.is_some_and(|(_, at)| since.is_none_or(|since| at >= since));
        let found = tokio::time::timeout(wait, values.wait_for(fresh)).await;
        match found {
            Ok(Ok(value)) => value.map(|(v, _)| v),
            _ => None,
        }
    }

    async fn stop(self) -> Option<Conn> {
        self.cancel.cancel();
        self.task.await.ok()
    }
}

/// A publisher paced as a real-time source (see the module documentation).
struct Paced {
    index: usize,
    topic: String,
    qos: QoS,
    /// Messages per second.
    rate: f64,
    payload: usize,
    window: u32,
    start: Instant,
    end: Instant,
}

impl Paced {
    /// Returns the connection and the slots skipped.
    async fn run(self, mut conn: Conn, shared: Arc<Shared>) -> anyhow::Result<(Conn, u64)> {
        let acked_qos = self.qos != QoS::AtMostOnce;
        let mut messages = MessageWriter::new(&self.topic, self.qos, self.payload, self.index)?;
        let max_catch_up = ((self.rate * MAX_CATCH_UP.as_secs_f64()) as u64).max(1);
        let duration = self.end.saturating_duration_since(self.start);
        let (mut slots, mut skipped, mut in_flight) = (0u64, 0u64, 0u32);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while Instant::now() < self.end {
            tokio::select! {
                _ = tick.tick() => {}
                read = conn.fill(), if acked_qos => {
                    read?;
                    in_flight -= take_acks(&mut conn, &shared, self.index)?;
                    continue;
                }
            }
            let due_total = (self.start.elapsed().min(duration).as_secs_f64() * self.rate) as u64;
            let mut due = due_total.saturating_sub(slots);
            if due > max_catch_up {
                skipped += due - max_catch_up;
                slots += due - max_catch_up;
                due = max_catch_up;
            }
            let n = if acked_qos { due.min(u64::from(self.window.saturating_sub(in_flight))) } else { due };
            let mut left = n;
            while left > 0 {
                let batch = left.min(MAX_BATCH);
                conn.stream.write_all(messages.next_batch(batch)).await?;
                shared.sent[self.index].fetch_add(batch, Ordering::Relaxed);
                left -= batch;
            }
            slots += n;
            if acked_qos && n > 0 {
                in_flight += n as u32;
                // Collect whatever PUBACKs have arrived, without waiting.
                conn.fill_available()?;
                in_flight -= take_acks(&mut conn, &shared, self.index)?;
            }
        }
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        while in_flight > 0 {
            tokio::select! {
                read = conn.fill() => {
                    read?;
                    in_flight -= take_acks(&mut conn, &shared, self.index)?;
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok((conn, skipped))
    }
}

/// Decodes the buffered acknowledgements; returns how many PUBLISHes they complete.
fn take_acks(conn: &mut Conn, shared: &Shared, index: usize) -> anyhow::Result<u32> {
    let mut done = 0u32;
    while let Some(frame) = conn.next_frame()? {
        if let Packet::PubAck(_) = Packet::read(frame)? {
            done += 1;
        }
    }
    shared.acked[index].fetch_add(u64::from(done), Ordering::Relaxed);
    Ok(done)
}
