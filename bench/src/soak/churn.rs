//! Connection churn beside the steady clients: a churner connects (clean session or not, under
//! one of a few ids of its own, so persistent sessions are resumed and taken over), sometimes
//! subscribes (a wildcard, so the router's tree changes) or publishes one message, stays a
//! moment, and leaves by DISCONNECT, FIN or RST — over and over until the load ends.
//!
//! Its persistent sessions never subscribe, so they hold no queue: the churn adds sessions,
//! not backlog, and at most `IDS` of them per churner.

use std::sync::Arc;
use std::time::Duration;

use amqtt_protocol::{ByteString, Packet, Publish, QoS};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::rng::Rng;
use super::state::{bump, Run};
use crate::client::Conn;

/// Client ids per churner.
pub const IDS: u64 = 4;

pub struct Churner {
    pub index: usize,
    pub run: Arc<Run>,
    pub stop: CancellationToken,
    pub rng: Rng,
}

impl Churner {
    pub async fn run(mut self) {
        let run = self.run.clone();
        let filter = format!("{}/+/3", run.topology.root);
        // Outside the root: no soak subscriber's filter matches it.
        let topic = ByteString::from(format!("{}-churn/{}", run.topology.root, self.index));
        while !self.stop.is_cancelled() {
            let client_id = churn_id(&run.run_id, self.index, self.rng.below(IDS));
            let clean = self.rng.chance(0.5);
            let mut conn = tokio::select! {
                _ = self.stop.cancelled() => return,
                connected = Conn::connect_session(run.addr, &client_id, clean) => match connected {
                    Ok((conn, _)) => conn,
                    Err(_) => {
                        bump(&run.counters.connect_failures);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            bump(&run.counters.churn_connections);
            if clean && self.rng.chance(0.5) {
                let qos = if self.rng.chance(0.5) { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                if let Err(error) = conn.subscribe(&filter, qos).await {
                    run.note(format!("{client_id}: churn subscription failed: {error:#}"));
                }
            }
            if self.rng.chance(0.3) {
                let publish = Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: topic.clone(),
                    pkid: 0,
                    payload: Bytes::from_static(b"churn"),
                });
                let _ = conn.send(&publish).await;
            }
            // Stay a moment, taking whatever arrives (unacknowledged: the session is dropped or
            // holds no subscription).
            let stay = self.rng.duration(Duration::ZERO, Duration::from_millis(300));
            let _ = tokio::time::timeout(stay, async {
                loop {
                    if conn.fill().await.is_err() {
                        break;
                    }
                    conn.rbuf.clear();
                }
            })
            .await;
            match self.rng.below(3) {
                0 => conn.disconnect().await,
                1 => conn.abort(false),
                _ => conn.abort(true),
            }
            tokio::time::sleep(self.rng.duration(Duration::ZERO, Duration::from_millis(100))).await;
        }
    }
}

pub fn churn_id(run_id: &str, churner: usize, n: u64) -> String {
    format!("soak-{run_id}-churn{churner}-{n}")
}
