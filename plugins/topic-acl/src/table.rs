//! One action's ACL (subscribe, publish or receive): each username's filters, compiled once and
//! found by a hash lookup on every check.

use std::collections::HashMap;

use amqtt_plugin_api::PluginError;

use crate::filter::{AclFilter, Who};
use crate::settings::AclSetting;

/// The ACL entry of clients that sent no username (aMQTT's spelling).
pub const ANONYMOUS: &str = "anonymous";

/// Username → filters of one action.
#[derive(Debug, Default)]
pub struct AclTable {
    users: HashMap<Box<str>, Box<[AclFilter]>>,
}

impl AclTable {
    /// Compiles `setting`, written under the key `key`; a malformed filter is an error naming
    /// where it is (`publish-acl.alice[1]`).
    pub fn compile(key: &str, setting: &AclSetting) -> Result<AclTable, PluginError> {
        let mut users = HashMap::with_capacity(setting.len());
        for (user, filters) in setting {
            let compiled = filters
                .iter()
                .enumerate()
                .map(|(index, filter)| {
                    AclFilter::parse(filter).map_err(|error| PluginError::InvalidSetting {
                        key: format!("{key}.{user}[{index}]"),
                        reason: format!("topic filter {filter:?}: {error}"),
                    })
                })
                .collect::<Result<Box<[AclFilter]>, PluginError>>()?;
            users.insert(user.as_str().into(), compiled);
        }
        Ok(AclTable { users })
    }

    /// Whether `who` may use `requested`: one of the filters of its entry (`anonymous` without
    /// a username) covers it. No entry, or an empty one, allows nothing; neither does an empty
    /// topic.
    pub fn allows(&self, who: Who<'_>, requested: &str) -> bool {
        if requested.is_empty() {
            return false;
        }
        let entry = who.username.unwrap_or(ANONYMOUS);
        self.users.get(entry).is_some_and(|filters| filters.iter().any(|filter| filter.covers(requested, who)))
    }

    /// How many usernames have an entry, for the start-up log.
    pub fn len(&self) -> usize {
        self.users.len()
    }
}
