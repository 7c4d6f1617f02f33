//! `amqtt-bench`: a load generator for MQTT 3.1.1 brokers, with a minimal client of its own
//! (tokio, `TCP_NODELAY`, batched writes, the `amqtt-protocol` codec) so that the client is not
//! the bottleneck; it reports its own CPU time beside the broker's.
//!
//! Scenarios: `fan-in`, `fan-out`, `pairs` (also with persistent subscribers), `connections`,
//! `latency`; `all` runs them one after the other against one broker, `smoke` runs them all for 1 s each and fails when one delivered
//! nothing or when `pairs` lost a QoS 1 message. `bench/compare.sh` runs them against amqtt-rs,
//! Mosquitto and rumqttd and writes docs/BENCHMARKS.md. Robustness (issue 9): `slow-consumer`
//! (a subscriber that stops reading, `slow.rs`) and `soak` (long mixed load with client kills,
//! `soak/`, driven by `bench/soak.sh`); both fail (exit status 1) when their checks do.

mod client;
mod connections;
mod flow;
mod histogram;
mod monitor;
mod procfs;
mod report;
mod slow;
mod soak;

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amqtt_protocol::QoS;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::flow::{FlowSpec, Settings};
use crate::report::Report;
use crate::slow::SlowSpec;
use crate::soak::SoakSettings;

/// Load generator for MQTT 3.1.1 brokers.
///
/// Throughput counts messages delivered to subscribers; "lost" is what publishers sent (QoS 0)
/// or had acknowledged (QoS 1) minus what was delivered, after a drain (until deliveries stop
/// for 1 s, 30 s at most). With --broker-pid the broker's CPU time and peak RSS are read from
/// /proc/PID.
#[derive(Debug, Parser)]
#[command(name = "amqtt-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publishers to one subscriber on a wildcard (`bench/ID/+/data`).
    FanIn {
        #[command(flatten)]
        common: Common,
        /// QoS of the publishes and of the subscription; several runs one scenario each.
        #[arg(long, value_delimiter = ',', default_value = "0,1", value_parser = parse_qos)]
        qos: Vec<QoS>,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
    },
    /// One publisher to many subscribers on one topic, QoS 0.
    FanOut {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
    },
    /// Publisher/subscriber pairs on distinct topics, QoS 1.
    Pairs {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Subscribers connect with clean session 0 and a fixed client id, so that the broker
        /// stores every message for them (scenario `pairs-qos1-persistent`): with persistence on,
        /// each one is written to disk.
        #[arg(long)]
        persistent_subscribers: bool,
    },
    /// Idle connections: connect rate, then broker RSS per connection.
    Connections {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Latency at light load: paced publishers to one subscriber on a wildcard.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_delimiter = ',', default_value = "0,1", value_parser = parse_qos)]
        qos: Vec<QoS>,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Messages per second per publisher.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
    },
    /// A subscriber that stops reading its socket: paced publishers (QoS 0 or 1, --rate msg/s
    /// in all) to --subscribers subscribers on a wildcard, run twice (phase 1 without, phase 2
    /// with one more subscriber on the same filter that never reads). Reports the reading
    /// subscribers' msg/s in both phases and their ratio, the broker's peak RSS in each, and what
    /// the stalled subscriber was dropped (owed minus received once it reads again). Fails when
    /// the ratio is below --min-ratio, the peak RSS grows by more than --max-rss-growth-mib, or
    /// (with --sys-interval) the broker's `$SYS` drop count differs from what was missed.
    SlowConsumer {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_delimiter = ',', default_value = "0,1", value_parser = parse_qos)]
        qos: Vec<QoS>,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Subscribers that keep reading.
        #[arg(long, default_value_t = 4)]
        subscribers: usize,
        /// Messages per second, all publishers together.
        #[arg(long, default_value_t = 100_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 0.9)]
        min_ratio: f64,
        /// Allowed growth of the broker's peak RSS from phase 1 to phase 2. The stalled session
        /// may hold max-queued-messages (1 000 by default: ~0.2 MiB of 64-byte messages) plus a
        /// 64 KiB write buffer; without a limit it would grow by ~20 MiB per second at 100 000
        /// msg/s. 16 MiB is far above the first and under one second of the second.
        #[arg(long, default_value_t = 16.0)]
        max_rss_growth_mib: f64,
        /// Print the figures and exit 0 even when a check fails (for bench/compare.sh, which
        /// reports every broker's figures).
        #[arg(long)]
        report_only: bool,
        /// The broker's `$SYS` interval in seconds (its `sys_interval`): reads the rise of
        /// `$SYS/broker/publish/messages/dropped` over phase 2. 0: not read.
        #[arg(long, default_value_t = 0.0)]
        sys_interval: f64,
    },
    /// Long mixed load with random client kills, checking that no acknowledged QoS 1/2 message
    /// to a persistent session is lost (nor a QoS 2 one duplicated) and that the broker's RSS
    /// levels off. bench/soak.sh runs it against a fresh broker with persistence on.
    Soak(SoakArgs),
    /// Every scenario, one after the other, against one broker process.
    All {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Every scenario for 1 s (500 connections); fails if one delivered nothing or if pairs
    /// lost a QoS 1 message. For CI.
    Smoke {
        #[command(flatten)]
        common: Common,
    },
    /// Prints a free TCP port on 127.0.0.1 (bound and released at once).
    FreePort,
    /// Waits until HOST:PORT accepts TCP connections.
    WaitPort {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long)]
        port: u16,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
}

#[derive(Debug, Clone, Args)]
struct Common {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Seconds of publishing per scenario [default: 10; smoke: 1].
    #[arg(long)]
    duration: Option<f64>,
    /// Payload bytes per message (at least 20: timestamp, publisher, sequence).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Unacknowledged QoS 1 PUBLISHes per publisher.
    #[arg(long, default_value_t = 64)]
    window: u32,
    /// How far a QoS 0 publisher may run ahead of what the subscribers received from it.
    #[arg(long, default_value_t = 1000)]
    ahead: u64,
    /// The broker's pid: its CPU time and RSS are read from /proc/PID.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// One JSON object per scenario and line, instead of text.
    #[arg(long)]
    json: bool,
    /// Name of the broker in the output.
    #[arg(long, default_value = "broker")]
    label: String,
    /// Worker threads of the bench's runtime [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Clone, Args)]
struct SoakArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Seconds of load.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Messages per second, all publishers together. The broker's max-queued-messages must hold
    /// what a persistent subscriber misses during an outage (up to 2 s of this rate), or its
    /// queue drops messages by design and the soak reports them lost.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Mean seconds between two client kills.
    #[arg(long, default_value_t = 2.0)]
    kill_every: f64,
    /// Seed of the random choices (kills, outages, churn) [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// The broker's pid: its RSS and open files are sampled from /proc/PID.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Seconds between two RSS samples.
    #[arg(long, default_value_t = 5.0)]
    rss_every: f64,
    /// Allowed RSS growth over the second half of the run (least-squares slope times its
    /// length): about 3 times what a passing 10-minute run shows, under what a leak of 1 KiB per
    /// connection or 8 bytes per message would add in that time (docs/BENCHMARKS.md, "Soak").
    #[arg(long, default_value_t = 4.0)]
    max_rss_growth_mib: f64,
    /// Longest final drain, in seconds.
    #[arg(long, default_value_t = 120.0)]
    drain_max: f64,
    /// Worker threads of the bench's runtime [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    /// Print every kill and reconnect.
    #[arg(long)]
    verbose: bool,
    /// Leave the persistent sessions the soak created on the broker (soak.sh then restarts the
    /// broker on its store, to check they hold nothing); by default a clean connection under
    /// each id ends them.
    #[arg(long)]
    keep_sessions: bool,
}

#[derive(Debug, Clone, Args)]
struct ConnArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 5000)]
    count: usize,
    /// Handshakes in progress at a time.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        _ => Err(format!("QoS must be 0 or 1, not {s:?}")),
    }
}

/// One scenario to run.
#[derive(Debug, Clone)]
enum Scenario {
    FanIn { qos: QoS, publishers: usize },
    FanOut { subscribers: usize },
    Pairs { pairs: usize, persistent: bool },
    Connections { count: usize, concurrency: usize },
    Latency { qos: QoS, publishers: usize, rate: u32 },
    SlowConsumer(SlowSpec),
}

impl Scenario {
    fn every(conn: &ConnArgs) -> Vec<Scenario> {
        vec![
            Scenario::FanIn { qos: QoS::AtMostOnce, publishers: 4 },
            Scenario::FanIn { qos: QoS::AtLeastOnce, publishers: 4 },
            Scenario::FanOut { subscribers: 100 },
            Scenario::Pairs { pairs: 50, persistent: false },
            Scenario::Connections { count: conn.count, concurrency: conn.concurrency },
            Scenario::Latency { qos: QoS::AtMostOnce, publishers: 4, rate: 1000 },
            Scenario::Latency { qos: QoS::AtLeastOnce, publishers: 4, rate: 1000 },
            // Last: the sessions it creates do not weigh on the others when they share a broker.
            Scenario::Pairs { pairs: 50, persistent: true },
        ]
    }

    fn flow(&self, run_id: &str) -> Option<FlowSpec> {
        let root = format!("bench/{run_id}");
        let spec = |scenario: String, qos, publishers: Vec<String>, subscribers: Vec<String>, per, rate| FlowSpec {
            scenario,
            qos,
            publishers,
            subscribers,
            deliveries_per_message: per,
            rate,
            persistent_subscribers: false,
        };
        Some(match *self {
            Scenario::FanIn { qos, publishers } => spec(
                format!("fanin-qos{}", qos as u8),
                qos,
                (0..publishers).map(|i| format!("{root}/fanin/{i}/data")).collect(),
                vec![format!("{root}/fanin/+/data")],
                1,
                None,
            ),
            Scenario::FanOut { subscribers } => spec(
                "fanout-qos0".to_owned(),
                QoS::AtMostOnce,
                vec![format!("{root}/fanout")],
                vec![format!("{root}/fanout"); subscribers],
                subscribers as u64,
                None,
            ),
            Scenario::Pairs { pairs, persistent } => FlowSpec {
                persistent_subscribers: persistent,
                ..spec(
                    if persistent { "pairs-qos1-persistent" } else { "pairs-qos1" }.to_owned(),
                    QoS::AtLeastOnce,
                    (0..pairs).map(|i| format!("{root}/pair/{i}")).collect(),
                    (0..pairs).map(|i| format!("{root}/pair/{i}")).collect(),
                    1,
                    None,
                )
            },
            Scenario::Latency { qos, publishers, rate } => spec(
                format!("latency-qos{}", qos as u8),
                qos,
                (0..publishers).map(|i| format!("{root}/latency/{i}/data")).collect(),
                vec![format!("{root}/latency/+/data")],
                1,
                Some(rate),
            ),
            Scenario::Connections { .. } | Scenario::SlowConsumer(_) => return None,
        })
    }

    async fn run(&self, settings: &Settings) -> anyhow::Result<Report> {
        match (self, self.flow(&settings.run_id)) {
            (_, Some(spec)) => flow::run(&spec, settings).await,
            (Scenario::Connections { count, concurrency }, None) => {
                connections::run(*count, *concurrency, settings).await
            }
            (Scenario::SlowConsumer(spec), None) => slow::run(spec, settings).await,
            (_, None) => unreachable!("every scenario but connections is a flow"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("amqtt-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    // Whether failed checks of slow-consumer make the exit status.
    let mut enforce = true;
    let (common, scenarios, smoke) = match command {
        Command::Soak(args) => return soak(args),
        Command::SlowConsumer {
            common,
            qos,
            publishers,
            subscribers,
            rate,
            min_ratio,
            max_rss_growth_mib,
            report_only,
            sys_interval,
        } => {
            enforce = !report_only;
            let sys_interval = (sys_interval > 0.0).then(|| Duration::from_secs_f64(sys_interval));
            let scenarios = qos
                .into_iter()
                .map(|qos| {
                    Scenario::SlowConsumer(SlowSpec {
                        qos,
                        publishers,
                        subscribers,
                        rate,
                        min_ratio,
                        max_rss_growth_kib: (max_rss_growth_mib * 1024.0) as u64,
                        sys_interval,
                    })
                })
                .collect();
            (common, scenarios, false)
        }
        Command::FreePort => {
            let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            return Ok(ExitCode::SUCCESS);
        }
        Command::WaitPort { host, port, timeout } => {
            wait_port(&host, port, Duration::from_secs_f64(timeout))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::FanIn { common, qos, publishers } => {
            (common, qos.into_iter().map(|qos| Scenario::FanIn { qos, publishers }).collect(), false)
        }
        Command::FanOut { common, subscribers } => (common, vec![Scenario::FanOut { subscribers }], false),
        Command::Pairs { common, pairs, persistent_subscribers } => {
            (common, vec![Scenario::Pairs { pairs, persistent: persistent_subscribers }], false)
        }
        Command::Connections { common, conn } => {
            (common, vec![Scenario::Connections { count: conn.count, concurrency: conn.concurrency }], false)
        }
        Command::Latency { common, qos, publishers, rate } => {
            (common, qos.into_iter().map(|qos| Scenario::Latency { qos, publishers, rate }).collect(), false)
        }
        Command::All { common, conn } => (common, Scenario::every(&conn), false),
        Command::Smoke { common } => (common, Scenario::every(&ConnArgs { count: 500, concurrency: 50 }), true),
    };
    let duration = common.duration.unwrap_or(if smoke { 1.0 } else { 10.0 });
    if !(duration > 0.0 && duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let addr = resolve(&common.host, common.port)?;
    let settings = Settings {
        addr,
        duration: Duration::from_secs_f64(duration),
        payload: common.payload,
        window: common.window,
        ahead: common.ahead,
        broker_pid: common.broker_pid,
        label: common.label.clone(),
        run_id: std::process::id().to_string(),
    };
    let threads = common.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;

    let mut failures = Vec::new();
    for scenario in scenarios {
        let report = runtime.block_on(scenario.run(&settings));
        let report = match report {
            Ok(report) => report,
            Err(error) if smoke => {
                failures.push(format!("{scenario:?}: {error:#}"));
                continue;
            }
            Err(error) => return Err(error.context(format!("{scenario:?}"))),
        };
        if common.json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.to_human());
        }
        if smoke {
            failures.extend(smoke_failures(&report));
        }
        if let Some(slow) = report.slow.as_ref().filter(|_| enforce) {
            failures.extend(slow.failures.iter().map(|f| format!("{}: {f}", report.scenario)));
        }
    }
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &failures {
        eprintln!("amqtt-bench: FAILED: {failure}");
    }
    Ok(ExitCode::FAILURE)
}

fn soak(args: SoakArgs) -> anyhow::Result<ExitCode> {
    for (name, value) in [("--duration", args.duration), ("--rate", args.rate), ("--kill-every", args.kill_every)] {
        if !(value > 0.0 && value.is_finite()) {
            bail!("{name} must be a positive number");
        }
    }
    if !(args.rss_every > 0.0 && args.drain_max > 0.0) {
        bail!("--rss-every and --drain-max must be positive numbers of seconds");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let settings = SoakSettings {
        addr: resolve(&args.host, args.port)?,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        seed,
        kill_every: Duration::from_secs_f64(args.kill_every),
        broker_pid: args.broker_pid,
        rss_every: Duration::from_secs_f64(args.rss_every),
        max_rss_growth_kib: (args.max_rss_growth_mib * 1024.0) as u64,
        drain_max: Duration::from_secs_f64(args.drain_max),
        run_id: std::process::id().to_string(),
        verbose: args.verbose,
        keep_sessions: args.keep_sessions,
    };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
    let outcome = runtime.block_on(soak::run(&settings))?;
    Ok(if outcome.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Why a smoke run's scenario fails, if it does.
fn smoke_failures(report: &Report) -> Vec<String> {
    let mut failures = Vec::new();
    let name = &report.scenario;
    if let Some(c) = &report.connections {
        if c.connected < c.requested {
            failures.push(format!("{name}: {} of {} connections failed", c.failed, c.requested));
        }
    } else if report.delivered == 0 {
        failures.push(format!("{name}: nothing delivered"));
    }
    if name.starts_with("pairs-qos1") && report.lost > 0 {
        failures.push(format!("{name}: {} acknowledged QoS 1 messages lost", report.lost));
    }
    if let Some(error) = &report.error {
        failures.push(format!("{name}: {error}"));
    }
    failures
}

fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

fn wait_port(host: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let addr = resolve(host, port)?;
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => bail!("{addr} does not accept connections after {timeout:?}: {e}"),
        }
    }
}
