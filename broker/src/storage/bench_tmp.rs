//! THROWAWAY: manual throughput measurement; removed before handing back.
use std::time::{Duration, Instant};

use amqtt_protocol::QoS;
use bytes::Bytes;

use super::*;

fn change(client: usize, seq: u64) -> Change {
    Change::MessageSaved {
        client_id: format!("client-{client}").into(),
        seq,
        message: StoredMessage {
            state: MessageState::Queued,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "bench/topic/x".into(),
            payload: Bytes::from(vec![7u8; 100]),
        },
    }
}

fn run(policy: SyncPolicy, concurrency: usize, secs: u64) {
    let dir = tempfile::tempdir_in("/work").unwrap();
    let handle = StorageWriter::start(Box::new(RedbStore::open(dir.path().join("b.redb")).unwrap()), policy).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let total: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|c| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        handle.submit_and_wait(vec![change(c, n)]).await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let el = start.elapsed().as_secs_f64();
    handle.shutdown().unwrap();
    println!("{policy:?} waiters={concurrency}: {total} changes in {el:.2}s = {:.0}/s", total as f64 / el);
}

fn fire_and_forget(policy: SyncPolicy, n: u64) {
    let dir = tempfile::tempdir_in("/work").unwrap();
    let handle = StorageWriter::start(Box::new(RedbStore::open(dir.path().join("b.redb")).unwrap()), policy).unwrap();
    let start = Instant::now();
    for i in 0..n {
        handle.submit(vec![change((i % 100) as usize, i)]);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(handle.submit_and_wait(Vec::new())).unwrap();
    let el = start.elapsed().as_secs_f64();
    handle.shutdown().unwrap();
    println!("{policy:?} submit (fire and forget): {n} changes in {el:.2}s = {:.0}/s", n as f64 / el);
}

#[test]
#[ignore]
fn bench() {
    for policy in [SyncPolicy::Always, SyncPolicy::Periodic(Duration::from_secs(1))] {
        for c in [1, 16, 256, 2048] {
            run(policy, c, 4);
        }
        fire_and_forget(policy, 300_000);
    }
}
