//! The idle-connections scenario: open `count` connections (CONNECT + CONNACK each, at most
//! `concurrency` handshakes at a time), report the connect rate and the broker's RSS per
//! connection, then close them all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::client::Conn;
use crate::flow::Settings;
use crate::monitor::Monitor;
use crate::procfs;
use crate::report::{ConnectionFigures, Report};

/// Pause between the last CONNACK and the RSS reading, so that work the broker finishes after
/// answering (registering the session, say) is counted.
const SETTLE: Duration = Duration::from_millis(500);

pub async fn run(count: usize, concurrency: usize, settings: &Settings) -> anyhow::Result<Report> {
    // One descriptor per connection, plus the runtime's and stdio's.
    procfs::ensure_open_files(count as u64 + 256)?;
    let monitor = Monitor::start(settings.broker_pid)?;
    let rss_before = monitor.broker_rss_now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await?;
        let (addr, client_id) = (settings.addr, format!("bench-{}-conn-{i}", settings.run_id));
        tasks.push(tokio::spawn(async move {
            let conn = Conn::connect(addr, &client_id).await;
            drop(permit);
            conn
        }));
    }
    let mut conns = Vec::with_capacity(count);
    let mut error = None;
    for task in tasks {
        match task.await? {
            Ok(conn) => conns.push(conn),
            Err(e) => error = error.or(Some(format!("{e:#}"))),
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_connected = monitor.broker_rss_now();
    let connected = conns.len();
    for conn in conns {
        conn.disconnect().await;
    }
    let (broker, usage) = monitor.finish().await;
    let rss_per_conn = match (rss_before, rss_connected) {
        (Some(before), Some(after)) if connected > 0 => Some((after as f64 - before as f64) / connected as f64),
        _ => None,
    };
    Ok(Report {
        scenario: "connections".to_owned(),
        label: settings.label.clone(),
        elapsed_s: connect_s,
        duration_s: connect_s,
        broker,
        bench_cpu_s: usage.bench_cpu_s,
        other_load: Some(usage.other_cpu_s / usage.wall_s),
        connections: Some(ConnectionFigures {
            requested: count,
            connected,
            failed: count - connected,
            connect_s,
            per_s: connected as f64 / connect_s,
            rss_connected_kib: rss_connected,
            rss_per_conn_kib: rss_per_conn,
        }),
        error,
        ..Report::default()
    })
}
