//! The soak (issue 9): mixed load for a long time against one broker, with clients killed and
//! reconnecting, checking what must hold however long it runs:
//!
//! - no QoS 1/2 message acknowledged to its publisher and matching a persistent session's
//!   subscription is lost: every one reaches that session, after however many of its
//!   reconnects; at most once when publisher and subscription are both QoS 2;
//! - the broker's RSS levels off: its slope over the second half of the run stays under a bound.
//!
//! The load ([`topology`]): publishers at QoS 0, 1 and 2 (some with persistent sessions that
//! resend after a kill), persistent and clean subscribers on wildcard filters, churners
//! connecting and leaving constantly, and a chaos task killing a random publisher or subscriber
//! (socket closed without DISCONNECT: FIN or RST) every few seconds. At the end the chaos
//! stops, publishers finish their QoS flows, and the persistent subscribers drain what the broker
//! kept for them; then the ledger is checked. `bench/soak.sh` runs it against a fresh broker
//! with persistence on.

mod churn;
mod ledger;
mod publisher;
mod rng;
mod rss;
mod state;
mod subscriber;
mod topology;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use self::churn::Churner;
use self::ledger::Verdict;
use self::publisher::Publisher;
use self::rng::Rng;
use self::rss::{RssLog, RssSummary};
use self::state::{get, Run};
use self::subscriber::Subscriber;
use self::topology::Topology;
use crate::client::Conn;

/// Churners running at once.
const CHURNERS: usize = 3;
/// The final drain ends when nothing owed arrived for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(15);
/// How often progress is printed, at most (a tenth of the run when that is shorter).
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SoakSettings {
    pub addr: SocketAddr,
    pub duration: Duration,
    /// Messages per second, all publishers together.
    pub rate: f64,
    pub seed: u64,
    /// Mean time between two kills.
    pub kill_every: Duration,
    pub broker_pid: Option<u32>,
    pub rss_every: Duration,
    pub max_rss_growth_kib: u64,
    /// Longest final drain.
    pub drain_max: Duration,
    pub run_id: String,
    pub verbose: bool,
    /// Leave the persistent sessions on the broker at the end.
    pub keep_sessions: bool,
}

/// What the soak found; `failures` empty means it passed.
#[derive(Debug)]
pub struct SoakOutcome {
    pub failures: Vec<String>,
}

pub async fn run(settings: &SoakSettings) -> anyhow::Result<SoakOutcome> {
    crate::flow::now_ns();
    let topology = Topology::standard(format!("soak/{}", settings.run_id));
    let run = Arc::new(Run::new(settings.addr, topology, settings.run_id.clone(), settings.verbose));
    let topology = &run.topology;
    println!(
        "soak: {:.0} s against {}, {} msg/s, seed {}, a kill every {:.1} s on average; {} publishers, {} persistent + {} clean subscribers, {} churners",
        settings.duration.as_secs_f64(),
        settings.addr,
        settings.rate,
        settings.seed,
        settings.kill_every.as_secs_f64(),
        topology.publishers.len(),
        topology.persistent_count(),
        topology.subscribers.len() - topology.persistent_count(),
        CHURNERS,
    );

    // Subscribers first, every one subscribed before anything is published.
    let stop_subscribers = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::channel(topology.subscribers.len());
    let mut kill_targets = Vec::new();
    let mut subscriber_tasks = Vec::new();
    for (index, spec) in topology.subscribers.iter().enumerate() {
        let kill = Arc::new(Notify::new());
        kill_targets.push(kill.clone());
        let subscriber = Subscriber {
            index,
            spec: *spec,
            run: run.clone(),
            kill,
            stop: stop_subscribers.clone(),
            ready: ready_tx.clone(),
            rng: Rng::new(settings.seed, 100 + index as u64),
        };
        subscriber_tasks.push(tokio::spawn(subscriber.run()));
    }
    drop(ready_tx);
    for _ in 0..topology.subscribers.len() {
        let ready = tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await;
        match ready {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(error))) => return Err(error.context("a subscriber could not subscribe")),
            Ok(None) | Err(_) => bail!("the subscribers did not subscribe within 60 s"),
        }
    }

    let mut rss = settings.broker_pid.map(RssLog::new);
    let rss_baseline = match rss.as_mut() {
        Some(log) => Some(log.sample().context("cannot read the broker's RSS")?.rss_kib),
        None => None,
    };
    if let Some(log) = rss.as_mut() {
        log.samples.clear();
        log.start_load();
    }

    let stop_load = CancellationToken::new();
    let per_publisher = settings.rate / topology.publishers.len() as f64;
    let mut publisher_tasks = Vec::new();
    for (index, spec) in topology.publishers.iter().enumerate() {
        let kill = Arc::new(Notify::new());
        kill_targets.push(kill.clone());
        let publisher = Publisher {
            index,
            spec: *spec,
            rate: per_publisher,
            run: run.clone(),
            kill,
            stop: stop_load.clone(),
            rng: Rng::new(settings.seed, 200 + index as u64),
        };
        publisher_tasks.push(tokio::spawn(publisher.run()));
    }
    let churn_tasks: Vec<_> = (0..CHURNERS)
        .map(|index| {
            let churner = Churner {
                index,
                run: run.clone(),
                stop: stop_load.clone(),
                rng: Rng::new(settings.seed, 300 + index as u64),
            };
            tokio::spawn(churner.run())
        })
        .collect();
    let chaos_task = tokio::spawn(chaos(
        run.clone(),
        kill_targets,
        settings.kill_every,
        stop_load.clone(),
        Rng::new(settings.seed, 1),
    ));

    // The load runs; the driver samples the broker's RSS and prints progress.
    let start = Instant::now();
    let mut failures = Vec::new();
    let progress_every = PROGRESS_EVERY.min(settings.duration / 10).max(Duration::from_secs(1));
    let mut next_progress = progress_every;
    while start.elapsed() < settings.duration {
        let left = settings.duration.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(settings.rss_every)).await;
        if let Some(log) = rss.as_mut() {
            if let Err(error) = log.sample() {
                failures.push(format!("the broker process is gone: {error:#}"));
                break;
            }
        }
        if publisher_tasks.iter().any(|task| task.is_finished())
            || subscriber_tasks.iter().any(|task| task.is_finished())
        {
            break; // a client gave up: its error is collected below
        }
        if start.elapsed() >= next_progress {
            next_progress += progress_every;
            print_progress(&run, start.elapsed(), rss.as_ref().and_then(|log| log.samples.last()));
        }
    }

    // The end: no more kills, churn or new messages; publishers finish their QoS flows.
    stop_load.cancel();
    let _ = chaos_task.await;
    for task in churn_tasks {
        let _ = task.await;
    }
    for task in publisher_tasks {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => failures.push(format!("publisher: {error:#}")),
            Ok(Err(error)) => failures.push(format!("publisher task: {error}")),
            Err(_) => failures.push("a publisher did not finish within 60 s".to_owned()),
        }
    }
    let load_s = start.elapsed().as_secs_f64();

    // Drain: the persistent subscribers (back from their last outage) get what is owed.
    let drain_start = Instant::now();
    let mut last = (run.ledger.missing(topology), Instant::now());
    while last.0 > 0 && drain_start.elapsed() < settings.drain_max && last.1.elapsed() < DRAIN_QUIET {
        if subscriber_tasks.iter().any(|task| task.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let missing = run.ledger.missing(topology);
        if missing != last.0 {
            last = (missing, Instant::now());
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    stop_subscribers.cancel();
    for task in subscriber_tasks {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => failures.push(format!("subscriber: {error:#}")),
            Ok(Err(error)) => failures.push(format!("subscriber task: {error}")),
            Err(_) => failures.push("a subscriber did not stop within 30 s".to_owned()),
        }
    }
    if !settings.keep_sessions {
        remove_sessions(&run).await;
    }

    let verdict = run.ledger.verdict(topology);
    let rss_summary = match (rss_baseline, rss.as_ref()) {
        (Some(baseline), Some(log)) => RssLog::summary(baseline, &log.samples),
        _ => None,
    };
    failures.extend(judge(&run, &verdict, rss_summary.as_ref(), settings));
    print_summary(&run, &verdict, rss_summary.as_ref(), settings, load_s, drain_s, &failures);
    Ok(SoakOutcome { failures })
}

/// Kills a random client (publisher or subscriber) every `mean` seconds on average, until
/// `stop`.
async fn chaos(run: Arc<Run>, targets: Vec<Arc<Notify>>, mean: Duration, stop: CancellationToken, mut rng: Rng) {
    loop {
        let wait = rng.duration(mean / 4, mean * 7 / 4);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let victim = rng.below(targets.len() as u64) as usize;
        run.trace(|| format!("kill target {victim}"));
        targets[victim].notify_one();
    }
}

/// Ends every persistent session the soak created (a clean connection under each id), so that a
/// broker that outlives the soak does not keep queueing for them.
async fn remove_sessions(run: &Run) {
    let topology = &run.topology;
    let mut ids: Vec<String> = (0..topology.persistent_count()).map(|i| format!("soak-{}-ps{i}", run.run_id)).collect();
    ids.extend(
        topology
            .publishers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.persistent)
            .map(|(i, _)| format!("soak-{}-p{i}", run.run_id)),
    );
    ids.extend((0..CHURNERS).flat_map(|c| (0..churn::IDS).map(move |n| churn::churn_id(&run.run_id, c, n))));
    for id in ids {
        if let Ok((conn, _)) = Conn::connect_session(run.addr, &id, true).await {
            conn.disconnect().await;
        }
    }
}

fn judge(run: &Run, verdict: &Verdict, rss: Option<&RssSummary>, settings: &SoakSettings) -> Vec<String> {
    let c = &run.counters;
    let mut failures = Vec::new();
    if verdict.lost > 0 {
        failures
            .push(format!("{} acknowledged QoS 1/2 messages never reached their persistent subscriber", verdict.lost));
    }
    if verdict.qos2_duplicates > 0 {
        failures.push(format!("{} QoS 2 messages delivered more than once", verdict.qos2_duplicates));
    }
    if get(&c.sessions_lost) > 0 {
        failures.push(format!("{} times a persistent session was not resumed", get(&c.sessions_lost)));
    }
    if get(&c.closed_by_broker) > 0 {
        failures.push(format!("the broker closed {} connections of well-behaved clients", get(&c.closed_by_broker)));
    }
    if get(&c.protocol_anomalies) > 0 {
        failures.push(format!("{} protocol anomalies (see above)", get(&c.protocol_anomalies)));
    }
    if verdict.owed == 0 {
        failures
            .push("no acknowledged QoS 1/2 message was owed to a persistent subscriber: nothing was checked".into());
    }
    if let Some(rss) = rss {
        if rss.second_half_growth_kib > settings.max_rss_growth_kib as f64 {
            failures.push(format!(
                "the broker's RSS kept growing: {:.1} MiB over the second half ({:.0} KiB/min), bound {:.1} MiB",
                rss.second_half_growth_kib / 1024.0,
                rss.slope_kib_per_min,
                settings.max_rss_growth_kib as f64 / 1024.0
            ));
        }
    }
    failures
}

fn print_progress(run: &Run, elapsed: Duration, sample: Option<&rss::Sample>) {
    let c = &run.counters;
    let published: u64 = c.published.iter().map(get).sum();
    let kills = get(&c.kills_publishers) + get(&c.kills_persistent) + get(&c.kills_clean);
    let mut line = format!(
        "soak: {:>4.0} s: published {published}, acknowledged {}, delivered {} (persistent: {:?}) + {} (clean), kills {kills}, churn connections {}",
        elapsed.as_secs_f64(),
        run.ledger.acknowledged_total(),
        get(&c.delivered_persistent),
        run.ledger.delivered_counts(),
        get(&c.delivered_clean),
        get(&c.churn_connections),
    );
    if let Some(s) = sample {
        line += &format!(", broker RSS {:.1} MiB", s.rss_kib as f64 / 1024.0);
        if let Some(fds) = s.fds {
            line += &format!(", {fds} fds");
        }
    }
    println!("{line}");
}

fn print_summary(
    run: &Run,
    verdict: &Verdict,
    rss: Option<&RssSummary>,
    settings: &SoakSettings,
    load_s: f64,
    drain_s: f64,
    failures: &[String],
) {
    let c = &run.counters;
    let [q0, q1, q2] = c.published.each_ref().map(get);
    println!("soak summary ({load_s:.0} s of load, {drain_s:.1} s of final drain):");
    println!(
        "  published {} (QoS 0 {q0}, QoS 1 {q1}, QoS 2 {q2}); acknowledged {}; unacknowledged at the end {}",
        q0 + q1 + q2,
        run.ledger.acknowledged_total(),
        get(&c.unacknowledged_at_end)
    );
    println!(
        "  persistent subscribers: owed {} deliveries (acknowledged QoS 1/2 messages x matching sessions), lost {}, QoS 2 duplicates {}, QoS 1 duplicates {} (allowed)",
        verdict.owed, verdict.lost, verdict.qos2_duplicates, verdict.qos1_duplicates
    );
    println!(
        "  delivered {} to persistent and {} to clean subscribers",
        get(&c.delivered_persistent),
        get(&c.delivered_clean)
    );
    println!(
        "  kills {} (publishers {}, persistent subscribers {}, clean subscribers {}), reconnects {}, churn connections {}, failed connection attempts {}, closed by the broker {}, sessions not resumed {}, protocol anomalies {}",
        get(&c.kills_publishers) + get(&c.kills_persistent) + get(&c.kills_clean),
        get(&c.kills_publishers),
        get(&c.kills_persistent),
        get(&c.kills_clean),
        get(&c.reconnects),
        get(&c.churn_connections),
        get(&c.connect_failures),
        get(&c.closed_by_broker),
        get(&c.sessions_lost),
        get(&c.protocol_anomalies),
    );
    if verdict.lost > 0 {
        println!("  lost by persistent subscriber: {:?}", verdict.lost_by_subscriber);
    }
    for example in &verdict.examples {
        println!("  e.g. {example}");
    }
    match rss {
        Some(r) => {
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "  broker RSS: before the load {:.1} MiB, start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; slope over the second half {:+.0} KiB/min ({:+.2} MiB, bound {:.1} MiB)",
                mib(r.baseline_kib),
                mib(r.start_kib),
                mib(r.peak_kib),
                mib(r.end_kib),
                r.slope_kib_per_min,
                r.second_half_growth_kib / 1024.0,
                mib(settings.max_rss_growth_kib)
            );
            if let (Some(a), Some(b)) = (r.fds_start, r.fds_end) {
                println!("  broker open files: {a} at the start of the load, {b} at its end");
            }
        }
        None => println!("  broker RSS: not measured (give --broker-pid, and a run long enough for 4 samples)"),
    }
    let notes = run.notes();
    if !notes.is_empty() {
        println!("  first anomalies:");
        for note in notes {
            println!("    {note}");
        }
    }
    if failures.is_empty() {
        println!("soak: PASSED");
    } else {
        for failure in failures {
            println!("soak: FAILED: {failure}");
        }
    }
}
