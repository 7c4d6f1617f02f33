//! What the benchmark reads from `/proc`: CPU time and resident memory of a process (the broker
//! under test, and the bench itself), and the open-files limit. Linux only, no libc.

use std::fs;
use std::process::Command;

use anyhow::{bail, Context};

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`. `USER_HZ` is 100 on every
/// Linux architecture's user ABI, whatever the kernel's internal HZ.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Which process to read: `self` or a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    This,
    Other(u32),
}

impl Pid {
    fn path(self, file: &str) -> String {
        match self {
            Pid::This => format!("/proc/self/{file}"),
            Pid::Other(pid) => format!("/proc/{pid}/{file}"),
        }
    }
}

/// User + system CPU seconds the process has used so far (all its threads).
pub fn cpu_seconds(pid: Pid) -> anyhow::Result<f64> {
    let path = pid.path("stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses itself:
    // the fields after it start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts with field 3 (state); utime is field 14 and stime field 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path}: no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("{path}: field {n} is not a number"))
    };
    Ok((field(14)? + field(15)?) as f64 / CLOCK_TICKS_PER_SECOND)
}

/// CPU seconds spent in user and system mode by the whole machine so far (all CPUs, from the
/// first line of `/proc/stat`; interrupt, softirq, steal and idle time left out).
pub fn machine_cpu_seconds() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().filter(|line| line.starts_with("cpu ")).context("/proc/stat: no cpu line")?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user, nice, system
    let busy: u64 = ticks.iter().take(3).sum();
    Ok(busy as f64 / CLOCK_TICKS_PER_SECOND)
}

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: Pid) -> anyhow::Result<u64> {
    let path = pid.path("status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    for line in status.lines() {
        if let Some(value) = line.strip_prefix("VmRSS:") {
            let kib = value.trim().trim_end_matches("kB").trim();
            return kib.parse().with_context(|| format!("{path}: VmRSS is not a number: {value:?}"));
        }
    }
    bail!("{path}: no VmRSS line (is the process a zombie?)")
}

/// Open file descriptors of the process (entries of `/proc/PID/fd`): sockets, the store, ...
pub fn open_fds(pid: Pid) -> anyhow::Result<u64> {
    let path = pid.path("fd");
    Ok(fs::read_dir(&path).with_context(|| format!("cannot read {path}"))?.count() as u64)
}

/// `None` stands for `unlimited`.
fn parse_limit(value: &str) -> anyhow::Result<Option<u64>> {
    if value == "unlimited" {
        Ok(None)
    } else {
        Ok(Some(value.parse().with_context(|| format!("bad limit {value:?}"))?))
    }
}

/// Soft and hard `Max open files` of this process, from `/proc/self/limits`.
fn open_files_limits() -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let limits = fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .context("/proc/self/limits: no 'Max open files' line")?;
    let mut fields = line.split_whitespace();
    let soft = parse_limit(fields.next().context("no soft limit")?)?;
    let hard = parse_limit(fields.next().context("no hard limit")?)?;
    Ok((soft, hard))
}

/// Makes sure this process may open `needed` file descriptors: raises the soft limit up to the
/// hard one with `prlimit(1)` (util-linux; std has no setrlimit and we use no libc crate) when it
/// is too low, and fails with the `ulimit -n` to run when even the hard limit is too low.
pub fn ensure_open_files(needed: u64) -> anyhow::Result<()> {
    let (soft, hard) = open_files_limits()?;
    if soft.is_none_or(|soft| soft >= needed) {
        return Ok(());
    }
    if hard.is_some_and(|hard| hard < needed) {
        bail!(
            "{needed} open files needed but the hard limit is {}: run `ulimit -n 65536` (as root if needed) first",
            hard.unwrap_or_default()
        );
    }
    let target = hard.map_or_else(|| needed.max(65536).to_string(), |hard| hard.to_string());
    let pid = std::process::id();
    let status = Command::new("prlimit").arg(format!("--pid={pid}")).arg(format!("--nofile={target}:")).status();
    match status {
        Ok(status) if status.success() => {}
        _ => bail!(
            "{needed} open files needed, the soft limit is {} and prlimit could not raise it: run `ulimit -n 65536` first",
            soft.unwrap_or_default()
        ),
    }
    let (soft, _) = open_files_limits()?;
    if soft.is_some_and(|soft| soft < needed) {
        bail!("{needed} open files needed, the soft limit is still {soft:?}: run `ulimit -n 65536` first");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_cpu_and_rss() {
        let cpu = cpu_seconds(Pid::This).expect("own stat");
        assert!(cpu >= 0.0);
        assert!(machine_cpu_seconds().expect("/proc/stat") >= cpu);
        let rss = rss_kib(Pid::This).expect("own status");
        assert!(rss > 0);
        // stdin, stdout, stderr at least.
        assert!(open_fds(Pid::This).expect("own fds") >= 3);
        let (soft, _) = open_files_limits().expect("own limits");
        assert!(soft.is_none_or(|soft| soft > 0));
    }
}
