//! Event plugins: the queue that carries broker events to them, and the handle through which
//! they act on the broker.
//!
//! Events are produced on the hot path (sessions, router) and consumed by plugins that may be
//! slow, so they travel through a bounded queue to one dispatcher task on a thread of its own.
//! A full queue drops the event and counts it rather than growing or blocking a client. Only
//! events some plugin asked for are produced at all.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use actix::Addr;
use amqtt_plugin_api::{BrokerHandle, BrokerStats, Event, EventPlugin, Interests};
use amqtt_protocol::{validate_topic_name, ByteString, Publish, QoS};
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use super::{guarded_unit, Named};
use crate::router::{self, Router};
use crate::stats::Stats;

/// Events waiting for the plugins; beyond this they are dropped.
const QUEUE_CAPACITY: usize = 4096;

/// The producing side, shared by every session and the router.
pub(crate) struct EventBus {
    /// What at least one plugin wants.
    interests: Interests,
    queue: Option<mpsc::Sender<Event>>,
    dropped: AtomicU64,
}

/// The consuming side: runs every event through the plugins that want it, in order.
pub(crate) struct Dispatcher {
    queue: mpsc::Receiver<Event>,
    plugins: Vec<(Named<dyn EventPlugin>, Interests)>,
}

impl EventBus {
    /// A bus for `plugins`, and its dispatcher when there is any plugin to dispatch to.
    pub(super) fn new(plugins: Vec<Named<dyn EventPlugin>>) -> (EventBus, Option<Dispatcher>) {
        if plugins.is_empty() {
            return (EventBus { interests: Interests::NONE, queue: None, dropped: AtomicU64::new(0) }, None);
        }
        let plugins: Vec<_> = plugins
            .into_iter()
            .map(|named| {
                let interests = named.plugin.interests();
                (named, interests)
            })
            .collect();
        let interests = plugins.iter().fold(Interests::NONE, |all, (_, wants)| all.union(*wants));
        let (sender, queue) = mpsc::channel(QUEUE_CAPACITY);
        (EventBus { interests, queue: Some(sender), dropped: AtomicU64::new(0) }, Some(Dispatcher { queue, plugins }))
    }

    /// What the plugins want; producers check it before building an event.
    pub(crate) fn interests(&self) -> Interests {
        self.interests
    }

    pub(crate) fn emit(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        if !self.interests.wants(&event) {
            return;
        }
        if queue.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Relaxed) + 1;
            // Every power of two: a flood of drops is reported without flooding the log.
            if dropped.is_power_of_two() {
                warn!(dropped, capacity = QUEUE_CAPACITY, "event plugins fall behind: events dropped");
            }
        }
    }
}

impl Dispatcher {
    pub(crate) async fn run(mut self) {
        while let Some(event) = self.queue.recv().await {
            for (Named { name, plugin }, interests) in &self.plugins {
                if interests.wants(&event) {
                    guarded_unit(name, plugin.on_event(&event)).await;
                }
            }
        }
    }
}

/// What plugins can do with the running broker.
pub(crate) struct BrokerApi {
    pub(crate) router: Addr<Router>,
    pub(crate) stats: Arc<Stats>,
}

impl BrokerHandle for BrokerApi {
    fn publish(&self, topic: &str, payload: Bytes, qos: u8, retain: bool) {
        if let Err(error) = validate_topic_name(topic) {
            warn!(topic, %error, "a plugin published to an invalid topic: message dropped");
            return;
        }
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let publish = Publish { dup: false, qos, retain, topic: ByteString::from(topic), pkid: 0, payload };
        self.router.do_send(router::Route { from: None, acks: 0, batch: vec![publish] });
    }

    fn stats(&self) -> BrokerStats {
        self.stats.broker_stats()
    }

    fn version(&self) -> String {
        format!("amqtt-rs {}", env!("CARGO_PKG_VERSION"))
    }
}
