//! Client configuration: aMQTT's client settings with aMQTT's defaults, as a struct and as
//! aMQTT's client YAML.
//!
//! Loading is lenient where aMQTT is (unknown keys are ignored with a warning, `null` keeps the
//! default, `-` and `_` are interchangeable in keys) and strict about values: a wrong type or
//! range fails with the key path and what is expected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amqtt_protocol::QoS;
use bytes::Bytes;
use tracing::{debug, warn};
use yaml_serde::{Mapping, Value};

use crate::ClientError;

/// Everything that shapes a client's behaviour. `Default` gives aMQTT's defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Keep-alive in seconds sent in CONNECT; 0 disables it. Default 10.
    pub keep_alive: u16,
    /// How many seconds before the keep-alive runs out a PINGREQ is sent when the client has sent
    /// nothing else. Default 1.
    pub ping_delay: u16,
    /// QoS of `publish` when neither the call nor `topics` says. Default QoS 0.
    pub default_qos: QoS,
    /// Retain flag of `publish` when neither the call nor `topics` says. Default false.
    pub default_retain: bool,
    /// Reconnect when the connection is lost (and retry the first connection). Default true.
    pub auto_reconnect: bool,
    /// Longest wait between two reconnection attempts, in seconds. Default 10.
    pub reconnect_max_interval: u64,
    /// Reconnection attempts before giving up; negative means forever. Default 2.
    pub reconnect_retries: i32,
    /// The CONNECT clean-session flag. Default true.
    pub cleansession: bool,
    /// Bound on establishing a connection (TCP connect, then CONNACK). `None`: the operating
    /// system's TCP timeout, and 60 s (aMQTT's default) for the CONNACK.
    pub connection_timeout: Option<Duration>,
    /// Per-topic defaults for `publish`, by exact topic name.
    pub topics: HashMap<String, TopicConfig>,
    /// The will message the broker publishes if this client goes away without DISCONNECT.
    pub will: Option<WillConfig>,
    /// Where to connect and the TLS material (`mqtts://`, `wss://`).
    pub connection: ConnectionConfig,
    /// TLS: check that the broker's certificate names the host of the URL (a DNS name or an IP
    /// address in its subject alternative names). Default true. Off, any certificate signed by
    /// a trusted CA is accepted, whatever host it was made for (mosquitto_pub's `--insecure`).
    pub check_hostname: bool,
    /// TLS: verify the broker's certificate at all. Default true. Off, any certificate is
    /// accepted, self-signed, expired or made for another host (so `check_hostname` does not
    /// matter): the connection is encrypted but the broker is not authenticated, and each
    /// connection logs a warning saying so. aMQTT refuses `verify_cert: false` unless
    /// `check_hostname: false` too; here it implies it.
    pub verify_cert: bool,
    /// WebSocket (`ws://`, `wss://`): HTTP headers added to the upgrade request, e.g.
    /// `Authorization`; one given here replaces a generated one of the same name. aMQTT passes
    /// them to `connect()` (`additional_headers`) and `--extra-headers`; the YAML key
    /// `extra_headers` (a mapping) is this crate's addition. Ignored by other schemes.
    pub extra_headers: Vec<(String, String)>,
    /// Credentials used when the URL has none.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keep_alive: 10,
            ping_delay: 1,
            default_qos: QoS::AtMostOnce,
            default_retain: false,
            auto_reconnect: true,
            reconnect_max_interval: 10,
            reconnect_retries: 2,
            cleansession: true,
            connection_timeout: None,
            topics: HashMap::new(),
            will: None,
            connection: ConnectionConfig::default(),
            check_hostname: true,
            verify_cert: true,
            extra_headers: Vec::new(),
            username: None,
            password: None,
        }
    }
}

/// Defaults for messages published to one topic; `None` falls back to the client defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub qos: Option<QoS>,
    pub retain: Option<bool>,
}

/// The will message (MQTT 3.1.1 section 3.1.2.5).
#[derive(Debug, Clone, PartialEq)]
pub struct WillConfig {
    pub topic: String,
    pub message: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// aMQTT's `connection` section (also accepted under its deprecated name `broker`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionConfig {
    /// Broker URL used by `connect("")`.
    pub uri: Option<String>,
    /// TLS: PEM file of the CA certificates trusted to sign the broker's certificate.
    /// `cafile`, `capath` and `cadata` add up; when none is given the system's CA certificates
    /// are trusted (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    pub cafile: Option<PathBuf>,
    /// TLS: directory of PEM CA certificate files (OpenSSL's `c_rehash` layout works; every
    /// file holding certificates is read).
    pub capath: Option<PathBuf>,
    /// TLS: CA certificates as PEM text.
    pub cadata: Option<String>,
    /// TLS: client certificate chain (PEM), with `keyfile`, for brokers that require one.
    pub certfile: Option<PathBuf>,
    /// TLS: private key of `certfile` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub keyfile: Option<PathBuf>,
}

impl ClientConfig {
    /// Parses aMQTT's client YAML; keys not given keep their defaults.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ClientError> {
        Self::parse(yaml).map_err(|reason| ClientError::Config { path: "<yaml>".into(), reason })
    }

    /// Reads and parses an aMQTT client YAML file.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let error = |reason: String| ClientError::Config { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(error)
    }

    fn parse(yaml: &str) -> Result<Self, String> {
        let root: Value = yaml_serde::from_str(yaml).map_err(|e| format!("invalid YAML: {e}"))?;
        let mut config = ClientConfig::default();
        let root = match root {
            // An empty file is a valid, empty configuration.
            Value::Null => return Ok(config),
            Value::Mapping(map) => map,
            _ => return Err("the top level must be a mapping of keys to values".into()),
        };
        for (key, value) in entries(&root, "")? {
            if value.is_null() {
                continue;
            }
            let path = key.as_str();
            match key.replace('-', "_").as_str() {
                "keep_alive" => config.keep_alive = int(value, path)?,
                "ping_delay" => config.ping_delay = int(value, path)?,
                "default_qos" => config.default_qos = qos(value, path)?,
                "default_retain" => config.default_retain = boolean(value, path)?,
                "auto_reconnect" => config.auto_reconnect = boolean(value, path)?,
                "reconnect_max_interval" => config.reconnect_max_interval = int(value, path)?,
                "reconnect_retries" => config.reconnect_retries = int(value, path)?,
                "cleansession" | "clean_session" => config.cleansession = boolean(value, path)?,
                "connection_timeout" => config.connection_timeout = Some(seconds(value, path)?),
                "check_hostname" => config.check_hostname = boolean(value, path)?,
                "verify_cert" => config.verify_cert = boolean(value, path)?,
                "extra_headers" | "additional_headers" => config.extra_headers = headers(value, path)?,
                "username" => config.username = Some(string(value, path)?),
                "password" => config.password = Some(string(value, path)?),
                "topics" => config.topics = topics(value, path)?,
                "will" => config.will = Some(will(value, path)?),
                "connection" | "broker" => config.connection = connection(value, path)?,
                // aMQTT client plugins are Python classes: nothing to load here.
                "plugins" => debug!("config key `plugins` ignored: aMQTT plugins are Python classes"),
                _ => warn!(key = path, "unknown client config key, ignored"),
            }
        }
        Ok(config)
    }
}

/// The (key, value) pairs of a mapping, keys as strings; `path` prefixes error messages.
fn entries<'a>(map: &'a Mapping, path: &str) -> Result<Vec<(String, &'a Value)>, String> {
    map.iter()
        .map(|(key, value)| {
            let key = match key {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("{path}: keys must be strings")),
            };
            let full = if path.is_empty() { key } else { format!("{path}.{key}") };
            Ok((full, value))
        })
        .collect()
}

fn mapping<'a>(value: &'a Value, path: &str) -> Result<&'a Mapping, String> {
    value.as_mapping().ok_or_else(|| format!("{path}: must be a mapping"))
}

/// The last component of a key path, `-` read as `_`.
fn leaf(path: &str) -> String {
    path.rsplit('.').next().unwrap_or(path).replace('-', "_")
}

fn int<T: TryFrom<i64>>(value: &Value, path: &str) -> Result<T, String> {
    value
        .as_i64()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| format!("{path}: must be a whole number in range, not {}", show(value)))
}

fn boolean(value: &Value, path: &str) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| format!("{path}: must be true or false, not {}", show(value)))
}

fn string(value: &Value, path: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        // `password: 1234` is a number in YAML but meant as text.
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("{path}: must be a string, not {}", show(value))),
    }
}

fn qos(value: &Value, path: &str) -> Result<QoS, String> {
    value
        .as_u64()
        .and_then(|v| u8::try_from(v).ok())
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("{path}: QoS must be 0, 1 or 2, not {}", show(value)))
}

fn seconds(value: &Value, path: &str) -> Result<Duration, String> {
    value
        .as_f64()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{path}: must be a non-negative number of seconds, not {}", show(value)))
}

fn show(value: &Value) -> String {
    yaml_serde::to_string(value).map_or_else(|_| format!("{value:?}"), |s| s.trim_end().to_string())
}

fn topics(value: &Value, path: &str) -> Result<HashMap<String, TopicConfig>, String> {
    let mut topics = HashMap::new();
    for (key, value) in entries(mapping(value, path)?, path)? {
        let name = key[path.len() + 1..].to_string();
        let mut topic = TopicConfig { qos: None, retain: None };
        if !value.is_null() {
            for (key, value) in entries(mapping(value, &key)?, &key)? {
                match leaf(&key).as_str() {
                    _ if value.is_null() => {}
                    "qos" => topic.qos = Some(qos(value, &key)?),
                    "retain" => topic.retain = Some(boolean(value, &key)?),
                    _ => warn!(key, "unknown client config key, ignored"),
                }
            }
        }
        topics.insert(name, topic);
    }
    Ok(topics)
}

fn will(value: &Value, path: &str) -> Result<WillConfig, String> {
    let (mut topic, mut message) = (None, None);
    let mut will = WillConfig { topic: String::new(), message: Bytes::new(), qos: QoS::AtMostOnce, retain: false };
    for (key, value) in entries(mapping(value, path)?, path)? {
        match leaf(&key).as_str() {
            _ if value.is_null() => {}
            "topic" => topic = Some(string(value, &key)?),
            "message" => message = Some(Bytes::from(string(value, &key)?)),
            "qos" => will.qos = qos(value, &key)?,
            "retain" => will.retain = boolean(value, &key)?,
            _ => warn!(key, "unknown client config key, ignored"),
        }
    }
    will.topic = topic.ok_or_else(|| format!("{path}.topic: required when a will is given"))?;
    amqtt_protocol::validate_topic_name(&will.topic).map_err(|e| format!("{path}.topic: {e}"))?;
    will.message = message.ok_or_else(|| format!("{path}.message: required when a will is given"))?;
    Ok(will)
}

/// A mapping of header names to values; a number or boolean value is taken as its text.
fn headers(value: &Value, path: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (key, value) in entries(mapping(value, path)?, path)? {
        let name = key[path.len() + 1..].to_string();
        let value = match value {
            Value::Bool(b) => b.to_string(),
            _ => string(value, &key).map_err(|_| format!("{key}: a header value must be text, not {}", show(value)))?,
        };
        headers.push((name, value));
    }
    Ok(headers)
}

fn connection(value: &Value, path: &str) -> Result<ConnectionConfig, String> {
    let mut connection = ConnectionConfig::default();
    for (key, value) in entries(mapping(value, path)?, path)? {
        match leaf(&key).as_str() {
            _ if value.is_null() => {}
            "uri" => connection.uri = Some(string(value, &key)?),
            "cafile" => connection.cafile = Some(string(value, &key)?.into()),
            "capath" => connection.capath = Some(string(value, &key)?.into()),
            "cadata" => connection.cadata = Some(string(value, &key)?),
            "certfile" => connection.certfile = Some(string(value, &key)?.into()),
            "keyfile" => connection.keyfile = Some(string(value, &key)?.into()),
            _ => warn!(key, "unknown client config key, ignored"),
        }
    }
    if connection.certfile.is_some() != connection.keyfile.is_some() {
        return Err(format!("{path}: certfile and keyfile must be given together"));
    }
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_amqtt_defaults() {
        let config = ClientConfig::default();
        assert_eq!((config.keep_alive, config.ping_delay), (10, 1));
        assert_eq!((config.default_qos, config.default_retain), (QoS::AtMostOnce, false));
        assert!(config.auto_reconnect);
        assert_eq!((config.reconnect_max_interval, config.reconnect_retries), (10, 2));
        assert!(config.cleansession && config.check_hostname && config.verify_cert);
        assert!(config.will.is_none() && config.topics.is_empty());
    }

    #[test]
    fn empty_yaml_is_the_default() {
        let config = ClientConfig::from_yaml_str("").expect("loads");
        assert_eq!(config.keep_alive, 10);
        let config = ClientConfig::from_yaml_str("# nothing\n").expect("loads");
        assert_eq!(config.reconnect_retries, 2);
    }

    #[test]
    fn full_amqtt_client_yaml() {
        let yaml = "\
keep_alive: 30
ping_delay: 2
default_qos: 1
default_retain: true
auto_reconnect: false
reconnect_max_interval: 5
reconnect_retries: -1
cleansession: false
connection_timeout: 2.5
check_hostname: false
verify_cert: false
topics:
  a/b:
    qos: 2
  c/d:
    retain: true
will:
  topic: /will/client
  message: Dead or alive
  qos: 1
  retain: true
connection:
  uri: mqtt://user:pw@localhost:1884
  cafile: /etc/ca.pem
plugins:
  amqtt.plugins.logging_amqtt.PacketLoggerPlugin: {}
some_future_key: 1
";
        let config = ClientConfig::from_yaml_str(yaml).expect("loads");
        assert_eq!((config.keep_alive, config.ping_delay), (30, 2));
        assert_eq!((config.default_qos, config.default_retain), (QoS::AtLeastOnce, true));
        assert!(!config.auto_reconnect && !config.cleansession && !config.check_hostname && !config.verify_cert);
        assert_eq!((config.reconnect_max_interval, config.reconnect_retries), (5, -1));
        assert_eq!(config.connection_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(config.topics["a/b"], TopicConfig { qos: Some(QoS::ExactlyOnce), retain: None });
        assert_eq!(config.topics["c/d"], TopicConfig { qos: None, retain: Some(true) });
        assert_eq!(
            config.will,
            Some(WillConfig {
                topic: "/will/client".into(),
                message: Bytes::from_static(b"Dead or alive"),
                qos: QoS::AtLeastOnce,
                retain: true
            })
        );
        assert_eq!(config.connection.uri.as_deref(), Some("mqtt://user:pw@localhost:1884"));
        assert_eq!(config.connection.cafile.as_deref(), Some(Path::new("/etc/ca.pem")));
    }

    #[test]
    fn tls_keys_and_extra_headers() {
        let yaml = "\
check_hostname: false
connection:
  uri: wss://broker/mqtt
  capath: /etc/ssl/certs
  cadata: \"-----BEGIN CERTIFICATE-----\"
  certfile: me.pem
  keyfile: me.key
extra_headers:
  Authorization: Bearer abc
  X-Count: 3
  X-Flag: true
";
        let config = ClientConfig::from_yaml_str(yaml).expect("loads");
        assert!(!config.check_hostname && config.verify_cert);
        assert_eq!(config.connection.capath.as_deref(), Some(Path::new("/etc/ssl/certs")));
        assert_eq!(config.connection.cadata.as_deref(), Some("-----BEGIN CERTIFICATE-----"));
        assert_eq!(config.connection.certfile.as_deref(), Some(Path::new("me.pem")));
        assert_eq!(config.connection.keyfile.as_deref(), Some(Path::new("me.key")));
        let headers: Vec<(&str, &str)> = config.extra_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(headers, [("Authorization", "Bearer abc"), ("X-Count", "3"), ("X-Flag", "true")]);
        match ClientConfig::from_yaml_str("extra_headers:\n  A: [1]\n") {
            Err(ClientError::Config { reason, .. }) => assert!(reason.starts_with("extra_headers.A:"), "{reason}"),
            other => panic!("must fail, got {other:?}"),
        }
    }

    #[test]
    fn deprecated_broker_section_and_dashed_keys() {
        let config = ClientConfig::from_yaml_str("broker:\n  uri: mqtt://h\nkeep-alive: 5\n").expect("loads");
        assert_eq!(config.connection.uri.as_deref(), Some("mqtt://h"));
        assert_eq!(config.keep_alive, 5);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let reason = |yaml: &str| match ClientConfig::from_yaml_str(yaml) {
            Err(ClientError::Config { reason, .. }) => reason,
            other => panic!("{yaml:?} must fail, got {other:?}"),
        };
        assert!(reason("default_qos: 3").starts_with("default_qos: QoS must be 0, 1 or 2"));
        assert!(reason("keep_alive: 70000").starts_with("keep_alive:"));
        assert!(reason("auto_reconnect: maybe").starts_with("auto_reconnect: must be true or false"));
        assert!(reason("will:\n  message: x\n").starts_with("will.topic: required"));
        assert!(reason("will:\n  topic: a/+\n  message: x\n").starts_with("will.topic:"));
        assert!(reason("topics:\n  a:\n    qos: 7\n").starts_with("topics.a.qos:"));
        assert!(reason("connection:\n  certfile: c.pem\n").contains("certfile and keyfile"));
        assert!(reason("- a\n- b\n").contains("mapping"));
        assert!(reason("keep_alive: [1\n").starts_with("invalid YAML"));
    }

    #[test]
    fn load_reports_the_file() {
        let missing = Path::new("/nonexistent/amqtt-client.yaml");
        match ClientConfig::load(missing) {
            Err(error @ ClientError::Config { .. }) => {
                assert!(error.to_string().starts_with("config /nonexistent/amqtt-client.yaml: cannot read"))
            }
            other => panic!("must fail, got {other:?}"),
        }
    }
}
