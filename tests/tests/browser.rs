//! A real browser as a client: MQTT.js (npm package `mqtt`, its browser bundle) in headless
//! Chromium subscribes over the broker's WebSocket listener and shows a message that the
//! `amqtt_pub` command publishes.
//!
//! `tests/browser/run.js` drives the system's Chromium with puppeteer-core and prints what the
//! page shows, one line each; it needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and
//! `npm ci --prefix tests/browser` (`.ci/run` installs all three). Without them the test prints
//! a "skipped" line and passes, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use amqtt_tests::broker_process::cargo_build;
use amqtt_tests::process::{peer_available, probe, ChildLines};
use amqtt_tests::*;
use tokio::process::Command;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/browser");

/// Chromium's cold start on a busy 2-core machine can take a while; later steps are quick.
const BROWSER_START: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether Chromium, node and the npm packages are there (see [`peer_available`]).
fn browser_available() -> bool {
    let modules = Path::new(BROWSER_DIR).join("node_modules");
    let missing = if !chromium().is_file() {
        Some(format!("no Chromium at {} (apt-get install chromium, or set CHROMIUM)", chromium().display()))
    } else if !probe("node", &["--version"]).is_some_and(|status| status.success()) {
        Some("node not installed (apt-get install nodejs npm)".to_string())
    } else if !modules.join("mqtt/dist/mqtt.min.js").is_file() || !modules.join("puppeteer-core").is_dir() {
        Some("tests/browser has no node_modules (npm ci --prefix tests/browser)".to_string())
    } else {
        None
    };
    peer_available(missing)
}

/// The `amqtt_pub` binary, built with this test's profile into the same target folder (another
/// package's binary has no `CARGO_BIN_EXE_` here).
fn amqtt_pub() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let profile_dir = cargo_build(&["-p", "amqtt-client", "--bin", "amqtt_pub"]);
        let binary = profile_dir.join(format!("amqtt_pub{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.is_file(), "no amqtt_pub at {}", binary.display());
        binary
    })
}

/// Kills the process group of `run.js` (node and the Chromium it started) unless the script
/// ended by itself: a failing test leaves no browser running.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        }
    }
}

/// [MQTT-6.0.0-4] MQTT.js in headless Chromium connects over ws (subprotocol `mqtt`),
/// subscribes, and shows the message `amqtt_pub` publishes through the tcp listener.
#[tokio::test]
async fn mqtt_js_in_chromium_shows_a_message_from_amqtt_pub() {
    if !browser_available() {
        return;
    }
    let amqtt_pub = amqtt_pub();
    let broker = start_broker_with(
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n  ws:\n    type: ws\n    bind: 127.0.0.1:0\n",
    );
    let tcp = broker.local_addr("default").unwrap();
    let ws = broker.local_addr("ws").unwrap();

    let mut command = Command::new("node");
    command
        .arg(Path::new(BROWSER_DIR).join("run.js"))
        .args([&format!("ws://{ws}/mqtt"), "browser/#", "1"])
        .env("CHROMIUM", chromium())
        .process_group(0);
    let mut page = ChildLines::spawn(&mut command, "node tests/browser/run.js");
    let first = page.line().await;
    let pid = first.strip_prefix("pid ").and_then(|pid| pid.parse().ok()).unwrap_or_else(|| panic!("{first}"));
    let mut group = ProcessGroup(Some(pid));
    let status = page.line_within(BROWSER_START).await.expect("the page did not subscribe in time");
    assert_eq!(status, "subscribed 1", "the page's status");

    let published = tokio::time::timeout(
        WAIT,
        Command::new(amqtt_pub)
            .args(["--url", &format!("mqtt://{tcp}"), "-t", "browser/hello", "-m", "hello, browser", "-q", "1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("amqtt_pub still running")
    .expect("cannot run amqtt_pub");
    assert!(published.status.success(), "amqtt_pub failed: {}", String::from_utf8_lossy(&published.stderr));

    assert_eq!(page.line().await, "message browser/hello hello, browser");
    assert_eq!(page.line().await, "done");
    page.success().await;
    group.0 = None;
    broker.stop();
}
