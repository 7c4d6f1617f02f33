//! The plugin's settings as written in YAML: the `topic-check:` section, or the entry of aMQTT
//! 0.12's `plugins:` mapping (where keys are spelled with underscores).
//!
//! A map that is written but empty (`publish-acl:` with nothing after it) counts as configured:
//! aMQTT tests whether the key is present, and an ACL the user meant to write must not quietly
//! turn into "everything allowed".

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Username → the topic filters that user may use; `anonymous` stands for clients that sent no
/// username.
pub type AclSetting = BTreeMap<String, Vec<String>>;

/// Settings of `topic_acl`. Every map defaults to absent, which allows its action.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Who may subscribe to what.
    #[serde(alias = "subscribe-acl", alias = "subscribe_acl", deserialize_with = "present")]
    pub acl: Option<AclSetting>,
    /// Who may publish to what.
    #[serde(rename = "publish-acl", alias = "publish_acl", deserialize_with = "present")]
    pub publish_acl: Option<AclSetting>,
    /// Who may be delivered messages from what.
    #[serde(rename = "receive-acl", alias = "receive_acl", deserialize_with = "present")]
    pub receive_acl: Option<AclSetting>,
}

/// A key that is present is configured, even when its value is null.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<AclSetting>, D::Error> {
    deserializer.deserialize_option(PresentVisitor)
}

struct PresentVisitor;

impl<'de> Visitor<'de> for PresentVisitor {
    type Value = Option<AclSetting>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of username to a list of topic filters")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(AclSetting::new()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(AclSetting::new()))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(AclVisitor).map(Some)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        AclVisitor.visit_map(map).map(Some)
    }
}

/// The mapping itself: usernames may be written unquoted even when YAML reads them as numbers
/// (`1234: [...]`), and a user with nothing after the colon has no filters (and is denied).
struct AclVisitor;

impl<'de> Visitor<'de> for AclVisitor {
    type Value = AclSetting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of username to a list of topic filters")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut acl = AclSetting::new();
        while let Some(Username(user)) = map.next_key()? {
            let filters: Option<Vec<String>> = map.next_value()?;
            acl.entry(user).or_default().extend(filters.unwrap_or_default());
        }
        Ok(acl)
    }
}

/// A mapping key read as a username: a string, or a number written without quotes.
struct Username(String);

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsernameVisitor;

        impl Visitor<'_> for UsernameVisitor {
            type Value = Username;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a username")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Username, E> {
                Ok(Username(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Username, E> {
                Ok(Username(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Username, E> {
                Ok(Username(v.to_string()))
            }
        }

        deserializer.deserialize_any(UsernameVisitor)
    }
}
