//! How a plugin gets its settings: the YAML mapping the broker hands it, deserialized into the
//! plugin's own typed settings.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use yaml_serde::Value;

/// What a plugin is told about where it runs when it is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginContext {
    /// The name the plugin was enabled under.
    pub plugin_name: String,
    /// Folder of the broker's config file: relative paths in settings are relative to it.
    pub config_dir: Option<PathBuf>,
}

impl PluginContext {
    /// `path` as written in the config file, resolved against the config file's folder.
    pub fn resolve_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match &self.config_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// Why a plugin could not be built. The broker prefixes it with the plugin's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// A setting has the wrong type or an unusable value.
    #[error("setting {key}: {reason}")]
    InvalidSetting { key: String, reason: String },
    /// Anything else that stops the plugin from working (an unreadable file, ...).
    #[error("{0}")]
    Failed(String),
}

/// Deserializes `value` (a mapping, or null when the section is absent) into `T`, and returns
/// the keys `T` does not know, so the broker can report them: in a section of its own, an
/// unknown key is an error; in a shared section such as `auth:`, only a key that no plugin of
/// the chain knows is.
pub fn parse_settings<T: DeserializeOwned>(
    value: &Value,
    _context: &PluginContext,
) -> Result<(T, Vec<String>), PluginError> {
    let empty = Value::Mapping(Default::default());
    let value = if value.is_null() { &empty } else { value };
    let mut unknown = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| unknown.push(key_of(&path));
    let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
    match serde_path_to_error::deserialize(de) {
        Ok(settings) => Ok((settings, unknown)),
        Err(error) => {
            Err(PluginError::InvalidSetting { key: error.path().to_string(), reason: error.into_inner().to_string() })
        }
    }
}

/// Deserializes a YAML 1.1 boolean as aMQTT's YAML library reads it: `true`/`false`, and also
/// `yes`/`no`, `on`/`off` (any case). For `#[serde(default, deserialize_with = "...")]` on an
/// `Option<bool>` setting.
pub fn yaml_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Text(String),
    }
    match <Option<Raw> as serde::Deserialize>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Bool(value)) => Ok(Some(value)),
        Some(Raw::Text(text)) => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Ok(Some(true)),
            "false" | "no" | "off" | "n" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid value: string {text:?}, expected true or false (on/off and yes/no work too)"
            ))),
        },
    }
}

/// `a.b[2]` for a nested unknown key (serde_ignored's own Display adds `?` for options).
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        serde_ignored::Path::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => key_of(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, Default)]
    #[serde(default)]
    struct Settings {
        #[serde(rename = "allow-anonymous", alias = "allow_anonymous", deserialize_with = "yaml_bool")]
        allow_anonymous: Option<bool>,
    }

    fn parse(yaml: &str) -> Result<(Settings, Vec<String>), PluginError> {
        let value: Value = yaml_serde::from_str(yaml).unwrap();
        parse_settings(&value, &PluginContext::default())
    }

    #[test]
    fn known_keys_in_either_spelling() {
        assert_eq!(parse("allow-anonymous: false").unwrap().0.allow_anonymous, Some(false));
        assert_eq!(parse("allow_anonymous: true").unwrap().0.allow_anonymous, Some(true));
    }

    #[test]
    fn absent_section_is_all_defaults() {
        let (settings, unknown) = parse_settings::<Settings>(&Value::Null, &PluginContext::default()).unwrap();
        assert_eq!(settings.allow_anonymous, None);
        assert!(unknown.is_empty());
    }

    #[test]
    fn booleans_as_pyyaml_reads_them() {
        assert_eq!(parse("allow-anonymous: 'on'").unwrap().0.allow_anonymous, Some(true));
        assert_eq!(parse("allow-anonymous: No").unwrap().0.allow_anonymous, Some(false));
        let error = parse("allow-anonymous: perhaps").unwrap_err();
        assert!(error.to_string().contains("expected true or false"), "{error}");
    }

    #[test]
    fn unknown_keys_are_returned() {
        let (_, unknown) = parse("allow-anonymous: true\npassword-file: x\nnested: {a: 1}").unwrap();
        assert_eq!(unknown, ["password-file", "nested"]);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let error = parse("allow-anonymous: [1]").unwrap_err();
        assert!(matches!(&error, PluginError::InvalidSetting { key, .. } if key == "allow-anonymous"), "{error}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let context = PluginContext { plugin_name: "p".into(), config_dir: Some("/etc/amqtt".into()) };
        assert_eq!(context.resolve_path("passwd"), Path::new("/etc/amqtt/passwd"));
        assert_eq!(context.resolve_path("/abs/passwd"), Path::new("/abs/passwd"));
    }
}
