//! Built-in topic-check plugin `topic_acl`: who may subscribe to, publish to and receive from
//! which topics, per username. It answers to aMQTT's class name too, so an aMQTT config that
//! enables `amqtt.plugins.topic_checking.TopicAccessControlListPlugin` keeps its ACLs.
//!
//! ```yaml
//! topic-check:
//!   enabled: true
//!   plugins: [topic_acl]
//!   acl:                       # subscribe (also `subscribe-acl`)
//!     alice: ['sensors/#', 'users/%u/#']
//!     anonymous: ['public/#']
//!   publish-acl:
//!     alice: ['sensors/+/temp', 'devices/%c/#']
//!   receive-acl:
//!     anonymous: ['public/#']
//! ```
//!
//! For each action whose map is configured, a client is allowed when one filter of its entry
//! (`anonymous` for clients without a username) covers the topic, or for SUBSCRIBE the requested
//! filter (`src/filter.rs` has the exact rule, `%u`/`%c` and `$` topics); a client
//! without an entry is denied. An action whose map is absent is allowed, as in aMQTT, where
//! publishing stays open unless `publish-acl` is written.
//!
//! Every publish and every delivery is checked while topic-check is enabled, so the ACL is
//! compiled once at start-up and a check neither allocates nor awaits.

mod filter;
mod settings;
mod table;

use amqtt_plugin_api::{async_trait, Action, Answer, ClientInfo, Plugin, PluginContext, PluginError, TopicCheckPlugin};

pub use filter::FilterError;
pub use settings::{AclSetting, Settings};

use filter::Who;
use table::AclTable;

/// The `topic_acl` plugin: one compiled table per configured action.
#[derive(Debug)]
pub struct TopicAcl {
    subscribe: Option<AclTable>,
    publish: Option<AclTable>,
    receive: Option<AclTable>,
}

impl TopicAcl {
    /// The answer to `check`, without the future around it.
    pub fn decide(&self, client: &ClientInfo, topic: &str, action: Action) -> Answer {
        let table = match action {
            Action::Subscribe => &self.subscribe,
            Action::Publish => &self.publish,
            Action::Receive => &self.receive,
        };
        let Some(table) = table else { return Answer::Allow };
        let who = Who { username: client.username.as_deref(), client_id: &client.client_id };
        if table.allows(who, topic) {
            Answer::Allow
        } else {
            Answer::Deny
        }
    }
}

impl Plugin for TopicAcl {
    type Settings = Settings;

    fn new(settings: Settings, context: &PluginContext) -> Result<Self, PluginError> {
        let compile = |key: &str, setting: &Option<AclSetting>| {
            setting.as_ref().map(|setting| AclTable::compile(key, setting)).transpose()
        };
        let plugin = TopicAcl {
            subscribe: compile("acl", &settings.acl)?,
            publish: compile("publish-acl", &settings.publish_acl)?,
            receive: compile("receive-acl", &settings.receive_acl)?,
        };
        let users = |table: &Option<AclTable>| table.as_ref().map(AclTable::len);
        tracing::info!(
            plugin = %context.plugin_name,
            subscribe_users = ?users(&plugin.subscribe),
            publish_users = ?users(&plugin.publish),
            receive_users = ?users(&plugin.receive),
            "topic ACL loaded (None: action not restricted)"
        );
        Ok(plugin)
    }
}

#[async_trait]
impl TopicCheckPlugin for TopicAcl {
    async fn check(&self, client: &ClientInfo, topic: &str, action: Action) -> Answer {
        self.decide(client, topic, action)
    }

    async fn check_many(&self, client: &ClientInfo, topics: &[&str], action: Action) -> Vec<Answer> {
        topics.iter().map(|topic| self.decide(client, topic, action)).collect()
    }
}

amqtt_plugin_api::register_plugin!(
    topic_check,
    "topic_acl",
    TopicAcl,
    aliases = ["amqtt.plugins.topic_checking.TopicAccessControlListPlugin"]
);

#[cfg(test)]
mod tests;
