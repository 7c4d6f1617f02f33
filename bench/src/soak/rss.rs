//! The broker's memory over the soak: `VmRSS` (and open file descriptors) sampled at a fixed
//! interval, summarised as start, peak, end and the least-squares slope over the second half.
//!
//! Why the second half: the first minutes legitimately grow (allocator arenas warming up,
//! queues of parked sessions filling to their steady level, the store's page cache); a broker
//! whose limits hold is flat once the load is steady, while a leak keeps the line rising.

use std::time::Instant;

use crate::procfs::{self, Pid};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    pub rss_kib: u64,
    pub fds: Option<u64>,
}

#[derive(Debug)]
pub struct RssLog {
    pid: u32,
    start: Instant,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSummary {
    /// RSS before any load (after the subscribers connected).
    pub baseline_kib: u64,
    pub start_kib: u64,
    pub peak_kib: u64,
    pub end_kib: u64,
    /// Least-squares slope over the second half of the run, KiB per minute.
    pub slope_kib_per_min: f64,
    /// That slope times the second half's length: how much it grew while it should be flat.
    pub second_half_growth_kib: f64,
    pub fds_start: Option<u64>,
    pub fds_end: Option<u64>,
}

impl RssLog {
    pub fn new(pid: u32) -> RssLog {
        RssLog { pid, start: Instant::now(), samples: Vec::new() }
    }

    /// Restarts the clock: the load starts now.
    pub fn start_load(&mut self) {
        self.start = Instant::now();
    }

    /// Reads the broker's RSS now; fails if the broker is gone.
    pub fn sample(&mut self) -> anyhow::Result<Sample> {
        let sample = Sample {
            t: self.start.elapsed().as_secs_f64(),
            rss_kib: procfs::rss_kib(Pid::Other(self.pid))?,
            fds: procfs::open_fds(Pid::Other(self.pid)).ok(),
        };
        self.samples.push(sample);
        Ok(sample)
    }

    /// `baseline` was read before the load; `samples` during it. None with fewer than 4 samples.
    pub fn summary(baseline_kib: u64, samples: &[Sample]) -> Option<RssSummary> {
        let (first, last) = (samples.first()?, samples.last()?);
        let half = (first.t + last.t) / 2.0;
        let second: Vec<&Sample> = samples.iter().filter(|s| s.t >= half).collect();
        if samples.len() < 4 || second.len() < 2 {
            return None;
        }
        let n = second.len() as f64;
        let mean_t = second.iter().map(|s| s.t).sum::<f64>() / n;
        let mean_r = second.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
        let var_t: f64 = second.iter().map(|s| (s.t - mean_t).powi(2)).sum();
        let cov: f64 = second.iter().map(|s| (s.t - mean_t) * (s.rss_kib as f64 - mean_r)).sum();
        let slope_per_s = if var_t > 0.0 { cov / var_t } else { 0.0 };
        Some(RssSummary {
            baseline_kib,
            start_kib: first.rss_kib,
            peak_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
            end_kib: last.rss_kib,
            slope_kib_per_min: slope_per_s * 60.0,
            second_half_growth_kib: slope_per_s * (last.t - second[0].t),
            fds_start: first.fds,
            fds_end: last.fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: impl Fn(f64) -> u64) -> Vec<Sample> {
        (0..=20).map(|i| i as f64 * 5.0).map(|t| Sample { t, rss_kib: rss(t), fds: Some(10) }).collect()
    }

    #[test]
    fn flat_after_warm_up_has_no_slope() {
        // Grows for 20 s, then flat: the second half (50..100 s) is flat.
        let s = RssLog::summary(1000, &samples(|t| 10_000 + (t.min(20.0) * 100.0) as u64)).unwrap();
        assert_eq!((s.start_kib, s.peak_kib, s.end_kib), (10_000, 12_000, 12_000));
        assert!(s.slope_kib_per_min.abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn steady_growth_shows_in_the_slope() {
        // 10 KiB/s throughout: 600 KiB/min, 500 KiB over the second half's 50 s.
        let s = RssLog::summary(1000, &samples(|t| 10_000 + (t * 10.0) as u64)).unwrap();
        assert!((s.slope_kib_per_min - 600.0).abs() < 1e-6, "{s:?}");
        assert!((s.second_half_growth_kib - 500.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn too_few_samples_give_no_summary() {
        assert_eq!(RssLog::summary(1, &samples(|_| 5)[..3]), None);
    }
}
