//! CPU time of the broker and of the bench over a scenario, and the broker's peak RSS sampled
//! every 100 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procfs::{self, Pid};
use crate::report::BrokerFigures;

const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Monitor {
    broker: Option<BrokerSampler>,
    bench_cpu_start: f64,
    machine_cpu_start: f64,
    wall_start: Instant,
}

/// What the monitor measured besides the broker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub bench_cpu_s: f64,
    /// CPU seconds used by every other process of the machine meanwhile (user + system time of
    /// the machine minus the broker's and the bench's): a measure of how busy the machine was.
    pub other_cpu_s: f64,
    pub wall_s: f64,
}

#[derive(Debug)]
struct BrokerSampler {
    pid: u32,
    cpu_start: f64,
    rss_before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts measuring now; fails if `broker_pid` is given but cannot be read.
    pub fn start(broker_pid: Option<u32>) -> anyhow::Result<Monitor> {
        let broker = match broker_pid {
            Some(pid) => {
                let cpu_start = procfs::cpu_seconds(Pid::Other(pid))?;
                let rss_before = procfs::rss_kib(Pid::Other(pid))?;
                let peak = Arc::new(AtomicU64::new(rss_before));
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn({
                    let (peak, stop) = (peak.clone(), stop.clone());
                    async move {
                        let mut interval = tokio::time::interval(RSS_SAMPLE_INTERVAL);
                        while !stop.load(Ordering::Relaxed) {
                            interval.tick().await;
                            if let Ok(rss) = procfs::rss_kib(Pid::Other(pid)) {
                                peak.fetch_max(rss, Ordering::Relaxed);
                            }
                        }
                    }
                });
                Some(BrokerSampler { pid, cpu_start, rss_before, peak, stop, task })
            }
            None => None,
        };
        Ok(Monitor {
            broker,
            bench_cpu_start: procfs::cpu_seconds(Pid::This)?,
            machine_cpu_start: procfs::machine_cpu_seconds()?,
            wall_start: Instant::now(),
        })
    }

    /// The broker's RSS now (KiB), also counted towards the peak.
    pub fn broker_rss_now(&self) -> Option<u64> {
        let broker = self.broker.as_ref()?;
        let rss = procfs::rss_kib(Pid::Other(broker.pid)).ok()?;
        broker.peak.fetch_max(rss, Ordering::Relaxed);
        Some(rss)
    }

    /// Stops sampling: the broker's figures and the rest.
    pub async fn finish(self) -> (Option<BrokerFigures>, Usage) {
        let wall_s = self.wall_start.elapsed().as_secs_f64();
        let machine_cpu = procfs::machine_cpu_seconds().unwrap_or(self.machine_cpu_start) - self.machine_cpu_start;
        let bench_cpu = procfs::cpu_seconds(Pid::This).unwrap_or(self.bench_cpu_start) - self.bench_cpu_start;
        let broker = match self.broker {
            Some(b) => {
                let cpu = procfs::cpu_seconds(Pid::Other(b.pid)).map(|cpu| cpu - b.cpu_start).unwrap_or(f64::NAN);
                if let Ok(rss) = procfs::rss_kib(Pid::Other(b.pid)) {
                    b.peak.fetch_max(rss, Ordering::Relaxed);
                }
                b.stop.store(true, Ordering::Relaxed);
                let _ = b.task.await;
                Some(BrokerFigures {
                    cpu_s: cpu,
                    rss_before_kib: b.rss_before,
                    peak_rss_kib: b.peak.load(Ordering::Relaxed),
                })
            }
            None => None,
        };
        let broker_cpu = broker.map_or(0.0, |b| if b.cpu_s.is_finite() { b.cpu_s } else { 0.0 });
        let other_cpu_s = (machine_cpu - bench_cpu - broker_cpu).max(0.0);
        (broker, Usage { bench_cpu_s: bench_cpu, other_cpu_s, wall_s })
    }
}
