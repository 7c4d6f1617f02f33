//! The registry of linked-in plugins: each plugin crate submits a [`Registration`] with
//! `register_plugin!`, and the broker collects them all at start-up with
//! `inventory::iter::<Registration>`.

use std::fmt;
use std::sync::Arc;

use yaml_serde::Value;

use crate::{parse_settings, AuthPlugin, EventPlugin, Plugin, PluginContext, PluginError, TopicCheckPlugin};

/// What a plugin does, which decides the chain it can be part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Auth,
    TopicCheck,
    Event,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Auth => "auth",
            Kind::TopicCheck => "topic-check",
            Kind::Event => "event",
        })
    }
}

/// A built plugin, ready to be asked.
#[derive(Clone)]
pub enum Instance {
    Auth(Arc<dyn AuthPlugin>),
    TopicCheck(Arc<dyn TopicCheckPlugin>),
    Event(Arc<dyn EventPlugin>),
}

impl Instance {
    pub fn kind(&self) -> Kind {
        match self {
            Instance::Auth(_) => Kind::Auth,
            Instance::TopicCheck(_) => Kind::TopicCheck,
            Instance::Event(_) => Kind::Event,
        }
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instance({})", self.kind())
    }
}

/// A plugin built from its settings, with the keys of those settings it did not know.
#[derive(Debug)]
pub struct Built {
    pub instance: Instance,
    pub unknown_keys: Vec<String>,
}

/// One linked-in plugin, found by the broker under `name` or any of `aliases` (for example
/// aMQTT's Python class name, so that an aMQTT config names it unchanged).
pub struct Registration {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub build: fn(&Value, &PluginContext) -> Result<Built, PluginError>,
}

impl Registration {
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

inventory::collect!(Registration);

/// Every plugin linked into this program.
pub fn registrations() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}

fn build<P: Plugin>(value: &Value, context: &PluginContext) -> Result<(P, Vec<String>), PluginError> {
    let (settings, unknown_keys) = parse_settings::<P::Settings>(value, context)?;
    Ok((P::new(settings, context)?, unknown_keys))
}

pub fn build_auth<P: Plugin + AuthPlugin>(value: &Value, context: &PluginContext) -> Result<Built, PluginError> {
    let (plugin, unknown_keys) = build::<P>(value, context)?;
    Ok(Built { instance: Instance::Auth(Arc::new(plugin)), unknown_keys })
}

pub fn build_topic_check<P: Plugin + TopicCheckPlugin>(
    value: &Value,
    context: &PluginContext,
) -> Result<Built, PluginError> {
    let (plugin, unknown_keys) = build::<P>(value, context)?;
    Ok(Built { instance: Instance::TopicCheck(Arc::new(plugin)), unknown_keys })
}

pub fn build_event<P: Plugin + EventPlugin>(value: &Value, context: &PluginContext) -> Result<Built, PluginError> {
    let (plugin, unknown_keys) = build::<P>(value, context)?;
    Ok(Built { instance: Instance::Event(Arc::new(plugin)), unknown_keys })
}
