//! Child processes for the interop tests (Mosquitto's command-line clients, the Paho script):
//! whether a peer is installed, and a running peer whose output is read line by line with a
//! bound on every wait.

use std::io::Write;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::WAIT;

/// The exit status of `program args` run to completion with no input or output, or None when
/// it cannot be run at all: a probe for whether an interop peer is installed.
pub fn probe(program: &str, args: &[&str]) -> Option<ExitStatus> {
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
}

/// Whether the environment variable `CI` is set to something other than empty, `0` or `false`.
pub fn ci_is_set() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Decides whether an interop test can run, given why its peer is missing (None: it is
/// installed). A developer without the peer gets a visible "skipped" line and a pass; a CI run
/// (see [`ci_is_set`]) fails instead, since CI must test interop.
pub fn peer_available(missing: Option<String>) -> bool {
    let Some(reason) = missing else { return true };
    assert!(!ci_is_set(), "{reason}; CI is set, so a missing interop peer is a failure");
    // Straight to stderr, past the test harness's output capture, so the skip is visible.
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
    false
}

/// A running peer whose stdout is read line by line; killed when dropped. Every wait is bounded
/// by [`WAIT`] and a failure reports the exit status and stderr, so a stuck or crashed peer
/// fails the test with a reason instead of hanging it.
pub struct ChildLines {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ChildLines {
    /// Starts `command` with no input; `name` identifies it in failure messages.
    pub fn spawn(command: &mut Command, name: impl Into<String>) -> ChildLines {
        ChildLines::start(command, Stdio::null(), name.into())
    }

    /// Starts `command` with its stdin piped, for [`ChildLines::take_stdin`].
    pub fn spawn_with_stdin(command: &mut Command, name: impl Into<String>) -> ChildLines {
        ChildLines::start(command, Stdio::piped(), name.into())
    }

    fn start(command: &mut Command, stdin: Stdio, name: String) -> ChildLines {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run `{name}`: {error}"));
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        ChildLines { name, child, stdout }
    }

    /// The name given at spawn, for failure messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pipe to the process's stdin (started with [`ChildLines::spawn_with_stdin`]); dropping
    /// it closes the input.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin not piped, or already taken")
    }

    /// The next line of output, or None if none comes within `within`, for polling. Fails the
    /// test if the output ends.
    pub async fn line_within(&mut self, within: Duration) -> Option<String> {
        // `next_line` is cancel safe: a timed-out wait loses nothing.
        match tokio::time::timeout(within, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Some(line),
            Ok(Ok(None)) | Ok(Err(_)) => {
                let (_, report) = self.exit().await;
                panic!("`{}` ended its output early: {report}", self.name)
            }
            Err(_) => None,
        }
    }

    /// The next line of output; fails the test if none comes within [`WAIT`].
    pub async fn line(&mut self) -> String {
        match self.line_within(WAIT).await {
            Some(line) => line,
            None => panic!("`{}` printed nothing within {WAIT:?}", self.name),
        }
    }

    /// The next `n` lines of output.
    pub async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            lines.push(self.line().await);
        }
        lines
    }

    /// Waits (bounded) for the process to exit: whether it succeeded, and its exit status and
    /// stderr for failure messages.
    async fn exit(&mut self) -> (bool, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = tokio::time::timeout(WAIT, pipe.read_to_string(&mut stderr)).await;
        }
        let success = matches!(status, Ok(Ok(status)) if status.success());
        (success, format!("exit {status:?}, stderr: {stderr}"))
    }

    /// Reads the output to its end, waits for the process to exit and asserts it exited with
    /// status 0; returns the lines not read before.
    #[must_use = "the output is returned for checking; `success` asserts there is none"]
    pub async fn output_until_exit(mut self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => rest.push(line),
                Ok(_) => break,
                Err(_) => panic!("`{}` still running after {WAIT:?}; printed {rest:?}", self.name),
            }
        }
        let (success, report) = self.exit().await;
        assert!(success, "`{}` failed: {report}; printed {rest:?}", self.name);
        rest
    }

    /// Asserts the process exits with status 0 having printed nothing more than what was read.
    pub async fn success(self) {
        let name = self.name.clone();
        let rest = self.output_until_exit().await;
        assert!(rest.is_empty(), "`{name}` printed more than expected: {rest:?}");
    }
}
