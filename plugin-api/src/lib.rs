//! What an amqtt-rs plugin author depends on.
//!
//! A plugin is a type that implements [`Plugin`] (how it is built from its YAML settings) and
//! one of the three plugin traits:
//!
//! - [`AuthPlugin`]: decides whether a connecting client is let in;
//! - [`TopicCheckPlugin`]: decides whether a client may publish to, subscribe to or receive
//!   from a topic;
//! - [`EventPlugin`]: is told what happens in the broker (clients, subscriptions, messages) and
//!   may publish messages of its own through a [`BrokerHandle`].
//!
//! Each answer is [`Answer::Allow`], [`Answer::Deny`] or [`Answer::NoOpinion`]; the broker
//! combines the answers of every plugin in a chain (see the README's "Writing a plugin").
//!
//! A plugin reaches the broker in one of two ways:
//!
//! - linked in: [`register_plugin!`] adds it, under its name, to the registry the broker reads
//!   at start-up (through `inventory`);
//! - as a `.so` built from a `cdylib` crate: [`export_plugin!`] generates the C entry point
//!   described in [`abi`] and `include/amqtt_plugin.h`. Only C-compatible data crosses that
//!   boundary, so a plugin built with another rustc version still loads.

pub mod abi;
mod config;
mod event;
mod registry;

use std::net::SocketAddr;

pub use async_trait::async_trait;
pub use config::{parse_settings, yaml_bool, PluginContext, PluginError};
pub use event::{BrokerHandle, BrokerStats, Event, Interests};
/// Re-exported for [`register_plugin!`], so that a plugin crate does not need its own dependency.
pub use inventory;
pub use registry::{build_auth, build_event, build_topic_check, registrations, Built, Instance, Kind, Registration};
pub use serde;
pub use yaml_serde::Value;

/// A plugin's answer to a question the broker asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    Allow,
    Deny,
    /// The question is none of this plugin's business: the other plugins of the chain decide.
    NoOpinion,
}

/// Who is connecting, or who is asking in a topic check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub username: Option<String>,
    pub peer: SocketAddr,
    /// Subject of the TLS client certificate, when the client presented one.
    pub cert_subject: Option<String>,
    pub clean_session: bool,
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Publish to this topic name.
    Publish,
    /// Subscribe to this topic filter.
    Subscribe,
    /// Receive a message published to this topic name (checked for each message delivered).
    Receive,
}

/// How a plugin is built: its settings type and its constructor.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The plugin's settings, deserialized from the YAML mapping it is given (see
    /// [`parse_settings`]); fields should be optional or have defaults, since a shared section
    /// such as `auth:` may not mention this plugin at all.
    type Settings: serde::de::DeserializeOwned;

    fn new(settings: Self::Settings, context: &PluginContext) -> Result<Self, PluginError>;
}

/// Decides whether a connecting client is let in.
///
/// Called once per CONNECT; may do I/O (a database, an HTTP service): the broker awaits it
/// without holding up other clients.
#[async_trait]
pub trait AuthPlugin: Send + Sync + 'static {
    async fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Answer;
}

/// Decides whether a client may publish to, subscribe to or receive from a topic.
///
/// Called for every SUBSCRIBE filter, every PUBLISH and every delivery while
/// `topic-check.enabled` is true, so keep it fast: an answer that needs no I/O should come
/// without awaiting anything, which lets the broker skip its asynchronous path entirely.
#[async_trait]
pub trait TopicCheckPlugin: Send + Sync + 'static {
    async fn check(&self, client: &ClientInfo, topic: &str, action: Action) -> Answer;

    /// Checks several topics at once (the broker asks per batch of messages). The default asks
    /// [`check`](Self::check) for each; override it when one round trip can answer them all.
    async fn check_many(&self, client: &ClientInfo, topics: &[&str], action: Action) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(topics.len());
        for topic in topics {
            answers.push(self.check(client, topic, action).await);
        }
        answers
    }
}

/// Is told what happens in the broker.
///
/// Events come in order, one at a time per plugin, from a queue of their own: a slow plugin
/// delays its own events, never a client. When that queue is full, events are dropped (and
/// counted in a warning) rather than held in memory without bound.
#[async_trait]
pub trait EventPlugin: Send + Sync + 'static {
    /// Which events this plugin wants. The broker produces only events some plugin wants, so
    /// a plugin that does not ask for `messages` costs the message path nothing.
    fn interests(&self) -> Interests;

    async fn on_event(&self, event: &Event);
}

/// Registers a plugin type under a name (and optional aliases) with the broker that links its
/// crate. The kind is `auth`, `topic_check` or `event`.
///
/// ```
/// use amqtt_plugin_api::*;
///
/// /// Lets in the user `root` only.
/// struct RootOnly;
///
/// impl Plugin for RootOnly {
///     type Settings = serde::de::IgnoredAny;
///     fn new(_: Self::Settings, _: &PluginContext) -> Result<Self, PluginError> {
///         Ok(RootOnly)
///     }
/// }
///
/// #[async_trait]
/// impl AuthPlugin for RootOnly {
///     async fn authenticate(&self, client: &ClientInfo, _password: Option<&[u8]>) -> Answer {
///         if client.username.as_deref() == Some("root") { Answer::Allow } else { Answer::NoOpinion }
///     }
/// }
///
/// register_plugin!(auth, "root_only", RootOnly, aliases = ["my.python.RootOnlyPlugin"]);
/// # fn main() {
/// assert!(registrations().any(|r| r.answers_to("my.python.RootOnlyPlugin")));
/// # }
/// ```
///
/// A binary sees the registrations of the crates it links; a crate nothing refers to may be left
/// out by the linker, so the broker names its built-in plugin crates (`use crate_name as _;`).
#[macro_export]
macro_rules! register_plugin {
    ($kind:ident, $name:expr, $plugin:ty) => {
        $crate::register_plugin!($kind, $name, $plugin, aliases = []);
    };
    ($kind:ident, $name:expr, $plugin:ty, aliases = [$($alias:expr),* $(,)?]) => {
        $crate::inventory::submit! {
            $crate::Registration {
                name: $name,
                aliases: &[$($alias),*],
                kind: $crate::__kind!($kind),
                build: $crate::__build!($kind, $plugin),
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kind {
    (auth) => {
        $crate::Kind::Auth
    };
    (topic_check) => {
        $crate::Kind::TopicCheck
    };
    (event) => {
        $crate::Kind::Event
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __build {
    (auth, $plugin:ty) => {
        $crate::build_auth::<$plugin>
    };
    (topic_check, $plugin:ty) => {
        $crate::build_topic_check::<$plugin>
    };
    (event, $plugin:ty) => {
        $crate::build_event::<$plugin>
    };
}
