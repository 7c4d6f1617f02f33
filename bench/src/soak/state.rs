//! What the soak's tasks share: the topology, the ledger, the run's counters and the first
//! anomalies met, and the reconnect loop every client uses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::ledger::Ledger;
use super::topology::Topology;
use crate::client::Conn;

/// How many anomalies are kept word for word.
const NOTES: usize = 20;
/// A client that cannot connect for this long ends the soak: the broker is gone or stuck.
const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);
/// Pause between two failed connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Run {
    pub addr: SocketAddr,
    pub topology: Topology,
    pub ledger: Ledger,
    pub counters: Counters,
    /// Client ids of this bench process: `soak-RUN-...`.
    pub run_id: String,
    /// Print every kill and reconnect as it happens (`--verbose`).
    pub verbose: bool,
    notes: Mutex<Vec<String>>,
}

/// Monotonic counts over the whole run.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: [AtomicU64; 3],
    pub delivered_persistent: AtomicU64,
    pub delivered_clean: AtomicU64,
    pub kills_publishers: AtomicU64,
    pub kills_persistent: AtomicU64,
    pub kills_clean: AtomicU64,
    pub reconnects: AtomicU64,
    pub churn_connections: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connections the broker closed while the client did nothing wrong.
    pub closed_by_broker: AtomicU64,
    /// A persistent client came back and the broker had no session for it.
    pub sessions_lost: AtomicU64,
    /// A delivery at another QoS than min(publish, subscription), a topic outside the filter,
    /// or a packet the client did not expect.
    pub protocol_anomalies: AtomicU64,
    /// Unacknowledged QoS 1/2 PUBLISHes the publishers still had when the run ended.
    pub unacknowledged_at_end: AtomicU64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Run {
    pub fn new(addr: SocketAddr, topology: Topology, run_id: String, verbose: bool) -> Run {
        let ledger = Ledger::new(topology.publishers.len(), topology.persistent_count());
        Run { addr, topology, ledger, counters: Counters::default(), run_id, verbose, notes: Mutex::new(Vec::new()) }
    }

    /// With `--verbose`: one event, with the time since the bench started.
    pub fn trace(&self, text: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("soak: {:9.3} s: {}", crate::flow::now_ns() as f64 / 1e9, text());
        }
    }

    /// Remembers an anomaly (the first few word for word) and prints it as it happens.
    pub fn note(&self, text: String) {
        eprintln!("soak: {text}");
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if notes.len() < NOTES {
            notes.push(text);
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connects `client_id`, retrying while the broker refuses or does not answer; fails after
    /// RECONNECT_GIVE_UP. Returns the connection and the CONNACK's session-present flag.
    pub async fn connect(&self, client_id: &str, clean_session: bool) -> anyhow::Result<(Conn, bool)> {
        let first_failure = Instant::now();
        loop {
            match Conn::connect_session(self.addr, client_id, clean_session).await {
                Ok(connected) => return Ok(connected),
                Err(error) => {
                    bump(&self.counters.connect_failures);
                    if first_failure.elapsed() >= RECONNECT_GIVE_UP {
                        bail!("{client_id}: no connection for {RECONNECT_GIVE_UP:?}: {error:#}");
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }
    }
}
