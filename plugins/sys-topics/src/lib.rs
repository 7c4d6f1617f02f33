//! `broker_sys`: aMQTT's `$SYS` plugin (`amqtt.plugins.sys.broker.BrokerSysPlugin`).
//!
//! When the broker starts it publishes `$SYS/broker/version`, retained; then every
//! `sys_interval` seconds (20 unless set; 0 turns this off) the statistics under
//! `$SYS/broker/`: traffic, clients, in-flight and stored messages, retained messages,
//! subscriptions, memory and CPU (see [`report`] for the list and the payload formats). As in
//! aMQTT these periodic messages are not retained, and each subscriber gets them at the QoS it
//! was granted. Subscriptions starting with a wildcard do not see them [MQTT-4.7.2-1].
//!
//! The counters come from the broker ([`BrokerHandle::stats`]), which keeps them exact through
//! reconnections and takeovers, instead of being tallied from events here as aMQTT does (whose
//! connected count drifts, aMQTT issue #273). So the plugin asks for no events at all.

mod process;
mod report;
mod settings;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use amqtt_plugin_api::{
    async_trait, register_plugin, BrokerHandle, Event, EventPlugin, Interests, Plugin, PluginContext, PluginError,
};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use process::ProcessSampler;
pub use report::{report, ROOT, VERSION_TOPIC};
pub use settings::{Settings, DEFAULT_INTERVAL_SECS};

/// Published at QoS 2 so that, like aMQTT's broadcasts, each subscriber receives them at the QoS
/// of its subscription.
const QOS: u8 = 2;

pub struct SysTopics {
    interval: Option<Duration>,
    /// The task publishing the statistics, while the broker runs.
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Plugin for SysTopics {
    type Settings = Settings;

    fn new(settings: Settings, _context: &PluginContext) -> Result<Self, PluginError> {
        Ok(SysTopics { interval: settings.interval()?, ticker: Mutex::new(None) })
    }
}

impl SysTopics {
    /// The period of the statistics; None when they are off.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn start(&self, broker: &Arc<dyn BrokerHandle>) {
        broker.publish(VERSION_TOPIC, Bytes::from(broker.version()), QOS, true);
        let Some(period) = self.interval else {
            debug!("$SYS statistics off (sys_interval: 0)");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!("no tokio runtime to publish the $SYS statistics from: they are not published");
            return;
        };
        debug!(?period, "publishing $SYS statistics");
        let task = runtime.spawn(publish_every(broker.clone(), period));
        if let Some(previous) = self.ticker().replace(task) {
            previous.abort();
        }
    }

    fn stop(&self) {
        if let Some(task) = self.ticker().take() {
            task.abort();
        }
    }

    fn ticker(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        // The guarded value is a plain handle, valid whatever a panicking holder was doing.
        self.ticker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SysTopics {
    fn drop(&mut self) {
        self.stop();
    }
}

#[async_trait]
impl EventPlugin for SysTopics {
    fn interests(&self) -> Interests {
        Interests::NONE
    }

    async fn on_event(&self, event: &Event) {
        match event {
            Event::BrokerStarted { broker } => self.start(broker),
            Event::BrokerStopping => self.stop(),
            _ => {}
        }
    }
}

/// Publishes the statistics every `period`, the first time one period after the start (as
/// aMQTT does), until aborted.
async fn publish_every(broker: Arc<dyn BrokerHandle>, period: Duration) {
    let mut sampler = ProcessSampler::new();
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall, publish once and keep the rhythm rather than catching up in a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let stats = broker.stats();
        let process = sampler.sample();
        for (name, payload) in report(&stats, SystemTime::now(), &process) {
            broker.publish(&format!("{ROOT}{name}"), Bytes::from(payload), QOS, false);
        }
    }
}

register_plugin!(event, "broker_sys", SysTopics, aliases = ["sys_topics", "amqtt.plugins.sys.broker.BrokerSysPlugin"]);

#[cfg(test)]
mod tests;
