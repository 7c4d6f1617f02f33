//! Building the plugin host from the configuration: which plugins run, in which chain, with
//! which settings.
//!
//! Plugins are the linked-in ones (registered with `inventory`) and the `.so` files of
//! `plugins-dir`; a chain entry may also be the path of a `.so` file. Two configuration styles
//! are accepted:
//!
//! - aMQTT 0.12's `plugins:` mapping: each key a plugin (by our name, or aMQTT's Python class
//!   name) with its own settings; it alone decides what runs, and an unknown key in an entry's
//!   settings is an error;
//! - the older sections: `auth.plugins` (absent: every auth plugin) and, with
//!   `topic-check.enabled`, `topic-check.plugins` (absent: every topic-check plugin), each plugin
//!   reading its section's keys; a top-level `plugins:` list then limits which plugins exist at
//!   all. A key of a shared section that no enabled plugin knows is only warned about: it may
//!   belong to a plugin that is not enabled. Event plugins see the top-level mapping.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use amqtt_plugin_api::{registrations, Built, Instance, Kind, PluginContext, PluginError, Registration, Value};
use tracing::{info, warn};

use super::dynamic::{self, DynamicPlugin};
use super::events::{Dispatcher, EventBus};
use super::failed_logins::FailedLogins;
use super::{Named, PluginHost};
use crate::config::{Config, FailedLoginLimit};

/// aMQTT 0.12 plugins whose work the broker does itself (its logging): accepted and skipped.
const BUILT_INTO_THE_BROKER: &[&str] =
    &["amqtt.plugins.logging_amqtt.EventLoggerPlugin", "amqtt.plugins.logging_amqtt.PacketLoggerPlugin"];

#[derive(Debug, thiserror::Error)]
pub enum PluginSetupError {
    #[error(
        "{path}: no plugin called `{name}`; available: {available}. Check the spelling, or put the plugin's \
         .so file in {plugins_dir}"
    )]
    Unknown { path: String, name: String, available: String, plugins_dir: PathBuf },
    #[error("{path}: `{name}` is {actual} plugin, not {expected} plugin")]
    WrongKind { path: String, name: String, actual: &'static str, expected: &'static str },
    #[error("{path}: plugin {name}: {source}")]
    Build { path: String, name: String, source: PluginError },
    #[error("{path}.{key}: unknown setting of plugin {name}")]
    UnknownSetting { path: String, name: String, key: String },
    #[error("{path}: cannot load plugin file {file}: {reason}")]
    Load { path: String, file: PathBuf, reason: String },
    #[error("plugins: expected a list of plugin names, or a mapping of plugin names to their settings")]
    BadPluginsKey,
}

/// Where a plugin comes from.
enum Source<'a> {
    Linked(&'static Registration),
    Library(&'a DynamicPlugin),
}

impl Source<'_> {
    fn name(&self) -> &str {
        match self {
            Source::Linked(registration) => registration.name,
            Source::Library(library) => &library.name,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Source::Linked(registration) => registration.kind,
            Source::Library(library) => library.kind,
        }
    }

    fn build(&self, settings: &Value, context: &PluginContext) -> Result<Built, PluginError> {
        match self {
            Source::Linked(registration) => (registration.build)(settings, context),
            Source::Library(library) => library.build(settings, context),
        }
    }
}

/// Every plugin that can be enabled by name.
struct Catalog {
    linked: Vec<&'static Registration>,
    libraries: Vec<DynamicPlugin>,
    plugins_dir: PathBuf,
}

impl Catalog {
    fn find(&self, name: &str) -> Option<Source<'_>> {
        if let Some(registration) = self.linked.iter().find(|r| r.answers_to(name)) {
            return Some(Source::Linked(registration));
        }
        self.libraries.iter().find(|library| library.name == name).map(Source::Library)
    }

    fn all(&self, kind: Kind) -> Vec<Source<'_>> {
        let linked = self.linked.iter().map(|r| Source::Linked(r));
        linked.chain(self.libraries.iter().map(Source::Library)).filter(|source| source.kind() == kind).collect()
    }

    fn available(&self) -> String {
        let mut names: Vec<String> = self
            .all(Kind::Auth)
            .into_iter()
            .chain(self.all(Kind::TopicCheck))
            .chain(self.all(Kind::Event))
            .map(|source| format!("{} ({})", source.name(), source.kind()))
            .collect();
        names.dedup();
        names.join(", ")
    }
}

/// The chains under construction.
#[derive(Default)]
struct Chains {
    auth: Vec<Named<dyn amqtt_plugin_api::AuthPlugin>>,
    topic_checks: Vec<Named<dyn amqtt_plugin_api::TopicCheckPlugin>>,
    events: Vec<Named<dyn amqtt_plugin_api::EventPlugin>>,
}

impl Chains {
    fn add(&mut self, name: &str, instance: Instance) {
        let name = name.to_string();
        match instance {
            Instance::Auth(plugin) => self.auth.push(Named { name, plugin }),
            Instance::TopicCheck(plugin) => self.topic_checks.push(Named { name, plugin }),
            Instance::Event(plugin) => self.events.push(Named { name, plugin }),
        }
    }
}

/// Builds every plugin the configuration enables. The dispatcher, when there is one, must be
/// run for event plugins to hear anything.
pub(crate) fn build_host(config: &Config) -> Result<(Arc<PluginHost>, Option<Dispatcher>), PluginSetupError> {
    let catalog = Catalog {
        linked: registrations().collect(),
        libraries: dynamic::scan(&config.plugins_dir),
        plugins_dir: config.plugins_dir.clone(),
    };
    let context = |name: &str| PluginContext { plugin_name: name.to_string(), config_dir: config.base_dir.clone() };
    let mut chains = Chains::default();
    let topic_checks_enabled = match &config.plugins {
        Some(Value::Mapping(entries)) => {
            for (key, settings) in entries {
                let Some(name) = key.as_str() else { return Err(PluginSetupError::BadPluginsKey) };
                if BUILT_INTO_THE_BROKER.contains(&name) {
                    info!(plugin = name, "aMQTT plugin not needed: the broker logs events itself (-d, RUST_LOG)");
                    continue;
                }
                let path = format!("plugins.{name}");
                let loaded;
                let source = match resolve(&catalog, name, config, &path)? {
                    Resolved::Found(source) => source,
                    Resolved::Loaded(library) => {
                        loaded = library;
                        Source::Library(&loaded)
                    }
                };
                let built = build(&source, name, settings, &context(name), &path)?;
                if let Some(key) = built.unknown_keys.first() {
                    return Err(PluginSetupError::UnknownSetting { path, name: name.to_string(), key: key.clone() });
                }
                chains.add(name, built.instance);
            }
            !chains.topic_checks.is_empty()
        }
        Some(Value::Sequence(_)) | None => {
            let allowed: Option<Vec<String>> = match &config.plugins {
                Some(list) => Some(yaml_serde::from_value(list.clone()).map_err(|_| PluginSetupError::BadPluginsKey)?),
                None => None,
            };
            let in_list = |source: &Source<'_>| {
                allowed.as_ref().is_none_or(|names| {
                    names.iter().any(|name| catalog.find(name).is_some_and(|s| s.name() == source.name()))
                })
            };
            build_chain(
                &catalog,
                config,
                Kind::Auth,
                config.auth.plugins.as_deref(),
                &config.auth.settings,
                "auth",
                &in_list,
                &mut chains,
            )?;
            if config.topic_check.enabled {
                let section = &config.topic_check.settings;
                build_chain(
                    &catalog,
                    config,
                    Kind::TopicCheck,
                    config.topic_check.plugins.as_deref(),
                    section,
                    "topic-check",
                    &in_list,
                    &mut chains,
                )?;
            }
            for source in catalog.all(Kind::Event).into_iter().filter(|source| in_list(source)) {
                let name = source.name().to_string();
                // The top level holds every other broker setting: unknown keys mean nothing here.
                let built = build(&source, &name, &config.root, &context(&name), "plugins")?;
                chains.add(&name, built.instance);
            }
            config.topic_check.enabled
        }
        Some(_) => return Err(PluginSetupError::BadPluginsKey),
    };
    if chains.auth.is_empty() {
        warn!("no auth plugin is enabled: every client will be refused (CONNACK 5, not authorized)");
    }
    if topic_checks_enabled && chains.topic_checks.is_empty() {
        warn!("topic-check is enabled without any topic-check plugin: every publish and subscribe will be refused");
    }
    let names = |chain: &[String]| chain.join(", ");
    info!(
        auth = names(&chains.auth.iter().map(|n| n.name.clone()).collect::<Vec<_>>()),
        topic_check = topic_checks_enabled
            .then(|| names(&chains.topic_checks.iter().map(|n| n.name.clone()).collect::<Vec<_>>())),
        events = names(&chains.events.iter().map(|n| n.name.clone()).collect::<Vec<_>>()),
        "plugins enabled"
    );
    let (events, dispatcher) = EventBus::new(chains.events);
    let host = PluginHost {
        auth: chains.auth,
        failed_logins: FailedLogins::new(config.auth.failed_logins),
        topic_checks: topic_checks_enabled.then_some(chains.topic_checks),
        events,
    };
    Ok((Arc::new(host), dispatcher))
}

/// Builds the chain of one section (`auth` or `topic-check`): the named plugins in order, or
/// every plugin of the kind.
#[allow(clippy::too_many_arguments)]
fn build_chain(
    catalog: &Catalog,
    config: &Config,
    kind: Kind,
    names: Option<&[String]>,
    section: &Value,
    path: &str,
    in_list: &dyn Fn(&Source<'_>) -> bool,
    chains: &mut Chains,
) -> Result<(), PluginSetupError> {
    let context = |name: &str| PluginContext { plugin_name: name.to_string(), config_dir: config.base_dir.clone() };
    // Keys no plugin of the chain knows; `plugins` and `enabled` are the broker's own.
    let mut unknown: Option<Vec<String>> = None;
    let mut enabled = Vec::new();
    let mut add = |source: &Source<'_>, name: &str, chains: &mut Chains| -> Result<(), PluginSetupError> {
        if source.kind() != kind {
            return Err(PluginSetupError::WrongKind {
                path: format!("{path}.plugins"),
                name: name.to_string(),
                actual: article(source.kind()),
                expected: article(kind),
            });
        }
        let built = build(source, name, section, &context(name), path)?;
        unknown = Some(match unknown.take() {
            None => built.unknown_keys,
            Some(previous) => previous.into_iter().filter(|key| built.unknown_keys.contains(key)).collect(),
        });
        enabled.push(name.to_string());
        chains.add(name, built.instance);
        Ok(())
    };
    match names {
        Some(names) => {
            for name in names {
                match resolve(catalog, name, config, &format!("{path}.plugins"))? {
                    Resolved::Found(source) => add(&source, name, chains)?,
                    Resolved::Loaded(library) => add(&Source::Library(&library), name, chains)?,
                }
            }
        }
        None => {
            for source in catalog.all(kind).into_iter().filter(|source| in_list(source)) {
                let name = source.name().to_string();
                add(&source, &name, chains)?;
            }
        }
    }
    for key in unknown.unwrap_or_default() {
        if key != "plugins" && key != "enabled" && !FailedLoginLimit::KEYS.contains(&key.as_str()) {
            warn!(key = %format!("{path}.{key}"), plugins = %enabled.join(", "), "setting not used by any enabled plugin");
        }
    }
    Ok(())
}

enum Resolved<'a> {
    Found(Source<'a>),
    /// A chain entry naming a `.so` file directly.
    Loaded(DynamicPlugin),
}

fn resolve<'a>(
    catalog: &'a Catalog,
    entry: &str,
    config: &Config,
    path: &str,
) -> Result<Resolved<'a>, PluginSetupError> {
    if entry.ends_with(".so") || entry.contains('/') {
        let file = match &config.base_dir {
            Some(dir) if Path::new(entry).is_relative() => dir.join(entry),
            _ => PathBuf::from(entry),
        };
        return DynamicPlugin::load(&file).map(Resolved::Loaded).map_err(|error| PluginSetupError::Load {
            path: path.to_string(),
            file,
            reason: error.to_string(),
        });
    }
    catalog.find(entry).map(Resolved::Found).ok_or_else(|| PluginSetupError::Unknown {
        path: path.to_string(),
        name: entry.to_string(),
        available: catalog.available(),
        plugins_dir: catalog.plugins_dir.clone(),
    })
}

fn build(
    source: &Source<'_>,
    name: &str,
    settings: &Value,
    context: &PluginContext,
    path: &str,
) -> Result<Built, PluginSetupError> {
    source.build(settings, context).map_err(|source| PluginSetupError::Build {
        path: path.to_string(),
        name: name.to_string(),
        source,
    })
}

fn article(kind: Kind) -> &'static str {
    match kind {
        Kind::Auth => "an auth",
        Kind::TopicCheck => "a topic-check",
        Kind::Event => "an event",
    }
}
