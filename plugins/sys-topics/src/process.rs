//! What the broker process costs the machine: `heap/size`, `heap/maximum`, `cpu/percent` and
//! `cpu/maximum`, read from `/proc/self` rather than through a crate (aMQTT uses psutil).
//!
//! "Heap" is the resident set size as aMQTT reports it (psutil's `rss`), in MiB; its maximum is
//! the kernel's own high-water mark (`VmHWM`), so a peak between two samples is not missed. CPU
//! is the process's user plus system time over the wall time since the previous sample, in
//! percent of one core (above 100 when several cores are busy), as psutil's `cpu_percent`.
//! Where `/proc` is missing (not Linux), the values are 0.

use std::time::{Duration, Instant};

/// `/proc/<pid>/stat` counts CPU time in clock ticks of USER_HZ, which the kernel fixes at 100
/// on every architecture Rust supports for Linux (reading `sysconf(_SC_CLK_TCK)` would need libc).
const TICKS_PER_SECOND: u64 = 100;

/// One reading of the process's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    pub heap_mib: f64,
    pub heap_max_mib: f64,
    pub cpu_percent: f64,
    pub cpu_max_percent: f64,
}

/// Takes successive samples: CPU use is a difference between two of them.
#[derive(Debug)]
pub struct ProcessSampler {
    last_cpu: Option<(Instant, Duration)>,
    heap_max_mib: f64,
    cpu_max_percent: f64,
}

impl ProcessSampler {
    /// Starts measuring CPU use from now.
    pub fn new() -> Self {
        ProcessSampler {
            last_cpu: cpu_time().map(|cpu| (Instant::now(), cpu)),
            heap_max_mib: 0.0,
            cpu_max_percent: 0.0,
        }
    }

    pub fn sample(&mut self) -> ProcessSample {
        let (rss_kib, hwm_kib) =
            std::fs::read_to_string("/proc/self/status").map(|s| memory_kib(&s)).unwrap_or_default();
        let heap_mib = rss_kib.map_or(0.0, |kib| kib as f64 / 1024.0);
        // The kernel's peak, or at least the largest value seen here.
        let peak = hwm_kib.map_or(0.0, |kib| kib as f64 / 1024.0);
        self.heap_max_mib = self.heap_max_mib.max(peak).max(heap_mib);

        let now = (Instant::now(), cpu_time());
        let cpu_percent = match (self.last_cpu, now) {
            (Some((then, used_then)), (at, Some(used))) => percent(used.saturating_sub(used_then), at - then),
            _ => 0.0,
        };
        if let (at, Some(used)) = now {
            self.last_cpu = Some((at, used));
        }
        self.cpu_max_percent = self.cpu_max_percent.max(cpu_percent);
        ProcessSample { heap_mib, heap_max_mib: self.heap_max_mib, cpu_percent, cpu_max_percent: self.cpu_max_percent }
    }
}

impl Default for ProcessSampler {
    fn default() -> Self {
        ProcessSampler::new()
    }
}

/// CPU time used over `wall` time, in percent of one core, rounded to 0.1 as psutil does.
fn percent(used: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    (used.as_secs_f64() / wall.as_secs_f64() * 1000.0).round() / 10.0
}

/// User plus system CPU time of the whole process (every thread) so far.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks = cpu_ticks(&stat)?;
    Some(Duration::from_millis(ticks.saturating_mul(1000) / TICKS_PER_SECOND))
}

/// `utime + stime` from the text of `/proc/<pid>/stat`: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself contain spaces or parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` and `VmHWM` (in KiB) from the text of `/proc/<pid>/status`.
fn memory_kib(status: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        })
    };
    (field("VmRSS"), field("VmHWM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_found_after_an_awkward_command_name() {
        let stat = "4242 (my (odd) broker) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(380));
        assert_eq!(cpu_ticks("4242 (x) S 1 2"), None, "truncated");
        assert_eq!(cpu_ticks("no name here"), None);
    }

    #[test]
    fn resident_size_and_its_peak_in_kib() {
        let status = "Name:\tamqtt\nVmPeak:\t  999999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        assert_eq!(memory_kib(status), (Some(10240), Some(20480)));
        assert_eq!(memory_kib("Name:\tamqtt\n"), (None, None));
    }

    #[test]
    fn percent_of_one_core_rounded_like_psutil() {
        assert_eq!(percent(Duration::from_millis(500), Duration::from_secs(1)), 50.0);
        assert_eq!(percent(Duration::from_millis(3333), Duration::from_secs(2)), 166.7);
        assert_eq!(percent(Duration::from_millis(10), Duration::ZERO), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let mut sampler = ProcessSampler::new();
        let sample = sampler.sample();
        if cfg!(target_os = "linux") {
            assert!(sample.heap_mib > 0.0, "{sample:?}");
            assert!(sample.heap_max_mib >= sample.heap_mib, "{sample:?}");
        }
        assert!(sample.cpu_percent >= 0.0 && sample.cpu_max_percent >= sample.cpu_percent, "{sample:?}");
    }
}
