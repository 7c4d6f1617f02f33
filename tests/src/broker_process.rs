//! The `amqtt` binary as a child process, for tests that need what a user sees: its log
//! (stderr), its exit status, a SIGTERM or a SIGKILL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use crate::WAIT;

/// Runs `cargo build` with `args` and the profile the running test was built with, into the
/// same target folder; returns that profile's folder (where binaries and libraries land).
pub fn cargo_build(args: &[&str]) -> PathBuf {
    // A test runs as target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("cannot tell where this test runs from");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary outside a target folder");
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => vec![],
        Some("release") => vec!["--release".to_string()],
        Some(other) => vec!["--profile".to_string(), other.to_string()],
        None => panic!("unexpected target folder {}", profile_dir.display()),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace folder");
    let output = std::process::Command::new(env!("CARGO"))
        .arg("build")
        .args(args)
        .args(profile)
        .current_dir(workspace)
        .output()
        .expect("cannot run cargo");
    assert!(output.status.success(), "cargo build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    profile_dir.to_path_buf()
}

/// The `amqtt` binary, built once per test process.
pub fn amqtt_binary() -> &'static Path {
    static AMQTT: OnceLock<PathBuf> = OnceLock::new();
    AMQTT.get_or_init(|| {
        let profile_dir = cargo_build(&["-p", "amqtt-broker", "--bin", "amqtt"]);
        let amqtt = profile_dir.join(format!("amqtt{}", std::env::consts::EXE_SUFFIX));
        assert!(amqtt.is_file(), "no broker binary at {}", amqtt.display());
        amqtt
    })
}

/// The `amqtt` binary running on a config file; killed on drop.
pub struct BrokerProcess {
    child: Child,
    stderr: Lines<BufReader<ChildStderr>>,
    /// Every log line read so far.
    log: Vec<String>,
}

impl BrokerProcess {
    pub fn start(config: &Path) -> BrokerProcess {
        BrokerProcess::start_logging(config, &[], None)
    }

    /// Like [`BrokerProcess::start`], with more command-line arguments (`-d`) and `RUST_LOG`
    /// set to `rust_log` (unset when None).
    pub fn start_logging(config: &Path, args: &[&str], rust_log: Option<&str>) -> BrokerProcess {
        let mut command = Command::new(amqtt_binary());
        command.arg("-c").arg(config).args(args).env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run amqtt");
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        BrokerProcess { child, stderr, log: Vec::new() }
    }

    /// The first log line satisfying `matches`, among those read so far or those to come.
    pub async fn log_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.log.iter().find(|line| matches(line)) {
            return line.clone();
        }
        loop {
            match tokio::time::timeout(WAIT, self.stderr.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.log.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Ok(_) => panic!("amqtt ended ({:?}) before logging {what}:\n{}", self.child.try_wait(), self.log()),
                Err(_) => panic!("amqtt logged no {what} within {WAIT:?}:\n{}", self.log()),
            }
        }
    }

    /// Runs `work` while reading the broker's log as it comes, so that a broker that logs a lot
    /// (a line or two per connection of a flood) does not block on a full stderr pipe.
    pub async fn logging_while<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                // Cancel safe: a line half read is kept for the next call.
                line = self.stderr.next_line() => match line {
                    Ok(Some(line)) => self.log.push(line),
                    _ => return work.await,
                },
            }
        }
    }

    /// A warning about `file` that says `reason`.
    pub async fn warning(&mut self, file: &str, reason: &str) -> String {
        let what = format!("warning about {file} saying {reason:?}");
        self.log_line(&what, |line| line.contains("WARN") && line.contains(file) && line.contains(reason)).await
    }

    /// The address of the listener, from the "listening" log line.
    pub async fn addr(&mut self) -> SocketAddr {
        let line = self.log_line("`listening` line", |line| line.contains("listening") && line.contains("addr=")).await;
        let addr = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next());
        addr.and_then(|addr| addr.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no addr=IP:PORT in the log line {line:?}"))
    }

    /// Waits for the process to end by itself: its exit status and its whole log.
    pub async fn exit(mut self) -> (ExitStatus, String) {
        loop {
            match tokio::time::timeout(WAIT, self.stderr.next_line()).await {
                Ok(Ok(Some(line))) => self.log.push(line),
                Ok(_) => break,
                Err(_) => panic!("amqtt still running after {WAIT:?}:\n{}", self.log()),
            }
        }
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("amqtt closed stderr but runs on");
        (status.unwrap(), self.log())
    }

    pub fn log(&self) -> String {
        self.log.join("\n")
    }

    /// Kills the broker the hard way (SIGKILL: no flush, no goodbye) and waits for it to end.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("cannot kill amqtt");
    }

    /// Stops the broker as a service manager would (SIGTERM) and waits for it to end.
    pub async fn terminate(self) -> (ExitStatus, String) {
        self.signal("TERM");
        self.exit().await
    }

    /// Sends the broker the signal `name` (`TERM`, `INT`...), without waiting for anything.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|status| status.success()), "cannot send SIG{name} to amqtt");
    }

    /// Whether the process is still running (it may be shutting down).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("amqtt already ended")
    }

    /// The broker's resident memory (VmRSS), in KiB, as the kernel reports it (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("no /proc/PID/status");
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("no VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS is not a number of kB")
    }

    /// How many file descriptors the broker has open (Linux): sockets, its store, its log pipe.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("no /proc/PID/fd").count()
    }
}
