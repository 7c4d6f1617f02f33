//! What `auth_file` reads from its YAML: the `auth:` section it shares with the other auth
//! plugins, or its own entry of aMQTT 0.12's `plugins:` mapping.

use std::path::PathBuf;

/// Settings of `auth_file`. Every field has a default, since the shared `auth:` section may
/// not mention this plugin at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The password file, relative to the config file's folder unless absolute. Without one,
    /// the plugin has no opinion about anybody.
    #[serde(rename = "password-file", alias = "password_file")]
    pub password_file: Option<PathBuf>,
}
