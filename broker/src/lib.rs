//! amqtt-rs broker: a fast MQTT 3.1.1 broker built as actix actors, configured with aMQTT's
//! YAML schema.
//!
//! Embedding it takes two lines:
//!
//! ```no_run
//! use amqtt_broker::{Broker, Config};
//!
//! let broker = Broker::new(Config::default()).start()?;
//! println!("listening on {:?}", broker.listeners());
//! broker.stop();
//! # Ok::<(), amqtt_broker::BrokerError>(())
//! ```
//!
//! The architecture (listeners, sessions, router) is described in DESIGN.md.

mod broker;
pub mod config;
mod listener;
mod plugins;
mod router;
mod session;
mod shutdown;
mod stats;
// Persistence (issue 8): built and tested on its own; the router and sessions use it next.
mod storage;
mod transport;

pub use broker::{BoundListener, Broker, BrokerError, RunningBroker};
pub use config::{Config, ConfigError, ConfigWarning};
pub use plugins::PluginSetupError;
pub use stats::StatsSnapshot;
pub use transport::TlsSetupError;
