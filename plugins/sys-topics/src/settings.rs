//! The plugin's one setting, `sys_interval`, read the way aMQTT reads it: a number of seconds,
//! given as an integer or as a string of digits, where 0 (or less) turns the periodic topics off.

use std::fmt;
use std::time::Duration;

use amqtt_plugin_api::serde::de::{self, Deserializer, Visitor};
use amqtt_plugin_api::PluginError;
use serde::Deserialize;

/// aMQTT's default (its `BrokerSysPlugin.Config.sys_interval`).
pub const DEFAULT_INTERVAL_SECS: u64 = 20;

/// Longer than this is surely a typo, and the timer could not represent much more.
const MAX_INTERVAL_SECS: u64 = 365 * 24 * 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Seconds between two publications of the statistics; 0 or less disables them.
    #[serde(alias = "sys-interval", deserialize_with = "seconds")]
    pub sys_interval: Option<i64>,
}

impl Settings {
    /// The period of the statistics, or None when they are turned off.
    pub fn interval(&self) -> Result<Option<Duration>, PluginError> {
        let secs = self.sys_interval.unwrap_or(DEFAULT_INTERVAL_SECS as i64);
        if secs <= 0 {
            return Ok(None);
        }
        let secs = secs.unsigned_abs();
        if secs > MAX_INTERVAL_SECS {
            return Err(PluginError::InvalidSetting {
                key: "sys_interval".into(),
                reason: format!(
                    "{secs} seconds is more than a year; give the period in seconds (0 turns the $SYS statistics off)"
                ),
            });
        }
        Ok(Some(Duration::from_secs(secs)))
    }
}

/// An integer, a float (truncated, as Python's `int()` does) or a string holding an integer.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct Seconds;

    impl<'de> Visitor<'de> for Seconds {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of seconds, e.g. 20 (0 turns the $SYS statistics off)")
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Ok(Some(value))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(i64::try_from(value).unwrap_or(i64::MAX)))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
            if value.is_finite() {
                // Saturating, like every float-to-int `as` cast.
                Ok(Some(value.trunc() as i64))
            } else {
                Err(E::invalid_value(de::Unexpected::Float(value), &self))
            }
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            value.trim().parse().map(Some).map_err(|_| E::invalid_value(de::Unexpected::Str(value), &self))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    deserializer.deserialize_any(Seconds)
}

#[cfg(test)]
mod tests {
    use amqtt_plugin_api::{parse_settings, PluginContext, Value};

    use super::*;

    fn interval(yaml: &str) -> Result<Option<Duration>, PluginError> {
        let value: Value = yaml_serde::from_str(yaml).unwrap();
        let (settings, unknown) = parse_settings::<Settings>(&value, &PluginContext::default())?;
        assert!(unknown.is_empty(), "{unknown:?}");
        settings.interval()
    }

    #[test]
    fn twenty_seconds_unless_set() {
        assert_eq!(interval("{}").unwrap(), Some(Duration::from_secs(20)));
        assert_eq!(interval("sys_interval: null").unwrap(), Some(Duration::from_secs(20)));
    }

    #[test]
    fn either_spelling_and_amqtt_forms() {
        assert_eq!(interval("sys_interval: 5").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(interval("sys-interval: 7").unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(interval("sys_interval: '9'").unwrap(), Some(Duration::from_secs(9)));
        assert_eq!(interval("sys_interval: 2.9").unwrap(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn zero_or_less_turns_the_statistics_off() {
        assert_eq!(interval("sys_interval: 0").unwrap(), None);
        assert_eq!(interval("sys_interval: -1").unwrap(), None);
    }

    #[test]
    fn nonsense_is_refused_naming_the_key() {
        for yaml in ["sys_interval: soon", "sys_interval: [1]", "sys_interval: 99999999999"] {
            match interval(yaml) {
                Err(PluginError::InvalidSetting { key, .. }) => assert_eq!(key, "sys_interval", "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
    }
}
