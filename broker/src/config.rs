//! Broker configuration.
//!
//! The schema is aMQTT's broker YAML, so that an aMQTT config file starts this
//! broker unchanged. A few keys of our own (`connect-timeout`, `max-*`) sit
//! beside aMQTT's. Loading is done in three passes:
//!
//! 1. the text is parsed into a YAML value tree (syntax errors are reported
//!    here, with a position; a duplicate key keeps its last value, as in
//!    PyYAML, with a warning);
//! 2. the top level and each listener are deserialized into "raw" structs whose
//!    fields are all optional, through `serde_path_to_error` (so a bad value is
//!    reported with its key path) and `serde_ignored` (so an unknown key becomes
//!    a warning instead of an error: aMQTT ignores unknown keys, and an aMQTT
//!    file must keep working);
//! 3. the listeners inherit from `default` and everything is resolved into
//!    [`Config`].

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use amqtt_protocol::MAX_TOPIC_LEN;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use yaml_serde::{Mapping, Value};

/// Where the broker listens when no config file is given (aMQTT's default).
pub const DEFAULT_BIND: &str = "0.0.0.0:1883";

/// Where `.so` plugins are looked for unless `plugins-dir` says otherwise: relative to the
/// config file's folder (the working directory without a config file).
pub const DEFAULT_PLUGINS_DIR: &str = "plugins";

/// Port used when a `tcp` listener's `bind` has no port (aMQTT's default).
const DEFAULT_TCP_PORT: u16 = 1883;
/// Port used when a `ws` listener's `bind` has no port. aMQTT picks 8883 (the
/// usual MQTT-over-TLS port) for WebSocket; we keep it so the same file binds
/// the same port under both brokers.
const DEFAULT_WS_PORT: u16 = 8883;

/// Largest MQTT 3.1.1 packet: 1 fixed-header byte, 4 remaining-length bytes and
/// a remaining length of at most 268_435_455.
const MAX_PACKET_SIZE_LIMIT: i64 = 268_435_460;

const UNKNOWN_KEY: &str = "unknown key, ignored";

/// The broker's whole configuration, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Resolved listeners, in the order they appear in the YAML (`default`
    /// included where it appears, when it has a `bind`).
    pub listeners: Vec<ListenerConfig>,
    /// `timeout-disconnect-delay`: extra grace added to a client's keep-alive.
    pub timeout_disconnect_delay: Duration,
    /// `connect-timeout`: how long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// `max-packet-size` in bytes.
    pub max_packet_size: usize,
    /// `max-inflight-messages`: unacknowledged QoS 1/2 messages per client.
    pub max_inflight_messages: usize,
    /// `max-queued-messages`: messages kept per client while it is offline or busy.
    pub max_queued_messages: usize,
    /// `max-subscriptions-per-client`; 0 = unlimited.
    pub max_subscriptions_per_client: usize,
    /// `max-topic-length`: longest topic name or filter accepted, in bytes.
    pub max_topic_length: usize,
    /// `max-topic-levels`: most `/`-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    pub auth: AuthConfig,
    pub topic_check: TopicCheckConfig,
    /// aMQTT's top-level `plugins` key: a list of plugin names (0.10/0.11), or a mapping of
    /// plugin (or Python class) names to their settings (0.12). See `plugins::setup`.
    pub plugins: Option<Value>,
    /// `plugins-dir`: where `.so` plugins are loaded from (default `plugins`, next to the
    /// config file).
    pub plugins_dir: PathBuf,
    /// The whole file's top-level mapping: the settings event plugins see (`sys_interval`...).
    pub root: Value,
    /// Folder of the config file, for resolving relative paths; None for the
    /// built-in default.
    pub base_dir: Option<PathBuf>,
    /// The `persistence` section; None when it is absent or `enabled` is false (the default,
    /// as in aMQTT).
    pub persistence: Option<PersistenceConfig>,
    /// aMQTT 0.12's `session_expiry_interval`: a disconnected persistent session is removed
    /// after this long. None (absent) = never.
    pub session_expiry_interval: Option<Duration>,
}

/// Where the file named by `persistence.path` goes when the key is absent: next to the config
/// file (in the working directory without a config file).
pub const DEFAULT_PERSISTENCE_PATH: &str = "amqtt.redb";

/// The `persistence` section, when enabled: retained messages and persistent sessions are kept
/// in a file and survive restarts and crashes.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistenceConfig {
    /// `path`, resolved against the config file's folder.
    pub path: PathBuf,
    /// `sync` and `sync-interval`.
    pub sync: PersistenceSync,
}

/// `persistence.sync`: when a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistenceSync {
    /// `always`: a QoS 1/2 PUBLISH is acknowledged only once its commit is durable.
    Always,
    /// `periodic`: commits are synced once per `sync-interval`; a crash loses at most that much.
    Periodic(Duration),
}

/// One listener after inheriting from `default`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub kind: ListenerKind,
    /// None = unlimited (aMQTT: absent, 0 or negative).
    pub max_connections: Option<usize>,
    pub ssl: bool,
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub cadata: Option<String>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// With `ssl`: a client without a certificate from the configured CAs fails the handshake
    /// (mosquitto's `require_certificate`). Needs `cafile`, `capath` or `cadata`.
    pub require_certificate: bool,
    /// With `ssl`: the CN of a client's verified certificate becomes its user name, and the
    /// certificate vouches for it in place of a password (mosquitto's option of the same name).
    pub use_identity_as_username: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Ws,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Ws => "ws",
        })
    }
}

/// aMQTT's `auth` section: which auth plugins run, and the settings they share.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthConfig {
    /// `plugins`: None = every auth plugin; `Some(vec![])` = nobody is let in (as in aMQTT).
    pub plugins: Option<Vec<String>>,
    /// The whole section (`allow-anonymous`, `password-file`, ...), as every auth plugin sees it.
    pub settings: Value,
    /// `max-failed-logins`, `failed-login-window`, `failed-login-ban`: read by the broker itself.
    pub failed_logins: FailedLoginLimit,
}

/// How many failed logins an address may have before it is refused for a while (see
/// `plugins::failed_logins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedLoginLimit {
    /// `max-failed-logins` within `window` bans the address; 0 = no limit.
    pub max_failures: u32,
    pub window: Duration,
    pub ban: Duration,
}

impl FailedLoginLimit {
    /// The section's keys that belong to the broker, not to a plugin.
    pub const KEYS: [&'static str; 6] = [
        "max-failed-logins",
        "max_failed_logins",
        "failed-login-window",
        "failed_login_window",
        "failed-login-ban",
        "failed_login_ban",
    ];
}

impl Default for FailedLoginLimit {
    /// 10 failures within a minute: a minute's ban.
    fn default() -> Self {
        FailedLoginLimit { max_failures: 10, window: Duration::from_secs(60), ban: Duration::from_secs(60) }
    }
}

/// aMQTT's `topic-check` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicCheckConfig {
    pub enabled: bool,
    /// `plugins`: None = every topic-check plugin.
    pub plugins: Option<Vec<String>>,
    /// The whole section (`acl`, `publish-acl`, ...), as every topic-check plugin sees it.
    pub settings: Value,
}

/// Something in the file that did not stop the broker but that the user should fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// `path` is the key path (`listeners.my-tcp.bind`), or the file name for
    /// a YAML syntax error (then `reason` gives the line and column).
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path}: not supported yet: {feature} (see the README's list of what is not implemented)")]
    Unsupported { path: String, feature: String },
}

impl Default for Config {
    /// What aMQTT runs without `-c`: one tcp listener `default` on
    /// 0.0.0.0:1883, anonymous clients allowed.
    fn default() -> Self {
        let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_TCP_PORT);
        debug_assert_eq!(bind.to_string(), DEFAULT_BIND);
        Config::with_tcp_listener(bind)
    }
}

impl Config {
    /// Parses a config from YAML text. `base_dir` is where relative paths
    /// (certfile, password-file, ...) are resolved from.
    pub fn from_yaml_str(yaml: &str, base_dir: Option<&Path>) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        parse(yaml, base_dir, "config")
    }

    /// Reads and parses a config file; relative paths in it are resolved
    /// against the file's folder, as a user editing the file would expect.
    pub fn load(path: &Path) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        parse(&text, Some(base_dir), &path.display().to_string())
    }

    /// Fails with Unsupported for what this build cannot do yet, so the broker
    /// refuses to start rather than silently not serving a listener.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        // Every listener kind (tcp, ws, each with or without ssl) is served today.
        Ok(())
    }

    /// A default config whose only listener is a tcp listener `default` on `bind`.
    pub fn with_tcp_listener(bind: SocketAddr) -> Config {
        Config {
            listeners: vec![ListenerConfig {
                name: "default".to_string(),
                bind,
                kind: ListenerKind::Tcp,
                max_connections: None,
                ssl: false,
                cafile: None,
                capath: None,
                cadata: None,
                certfile: None,
                keyfile: None,
                require_certificate: false,
                use_identity_as_username: false,
            }],
            timeout_disconnect_delay: Duration::ZERO,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1024 * 1024,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_subscriptions_per_client: 10_000,
            max_topic_length: MAX_TOPIC_LEN,
            max_topic_levels: 128,
            auth: AuthConfig::default(),
            topic_check: TopicCheckConfig::default(),
            plugins: None,
            plugins_dir: PathBuf::from(DEFAULT_PLUGINS_DIR),
            root: Value::Null,
            base_dir: None,
            persistence: None,
            session_expiry_interval: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

fn parse(yaml: &str, base_dir: Option<&Path>, origin: &str) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
    let (mut root, mut warnings) = parse_yaml(yaml, origin)?;
    let mut config = Config {
        base_dir: base_dir.map(Path::to_path_buf),
        plugins_dir: resolve_path(base_dir, PathBuf::from(DEFAULT_PLUGINS_DIR)),
        ..Config::default()
    };
    // An empty or all-comments file is aMQTT's "no settings": the defaults.
    if root.is_null() {
        return Ok((config, warnings));
    }

    drop_non_string_keys(&mut root, "", &mut warnings);
    for section in ["auth", "topic-check", "topic_check", "persistence"] {
        if let Some(value) = root.get_mut(section) {
            drop_non_string_keys(value, section, &mut warnings);
        }
    }
    let top: RawTop = deserialize_at(&root, "", origin, &mut warnings)?;
    let listeners = build_listeners(top.listeners.as_ref(), base_dir, origin, &mut warnings)?;
    if let Some(listeners) = listeners {
        config.listeners = listeners;
    }
    if let Some(Seconds(delay)) = top.timeout_disconnect_delay {
        config.timeout_disconnect_delay = delay;
    }
    if let Some(Seconds(timeout)) = top.connect_timeout {
        config.connect_timeout = timeout;
    }
    if let Some(size) = top.max_packet_size {
        config.max_packet_size = size.to_usize();
    }
    if let Some(n) = top.max_inflight_messages {
        config.max_inflight_messages = n.to_usize();
    }
    if let Some(n) = top.max_queued_messages {
        config.max_queued_messages = n.to_usize();
    }
    if let Some(n) = top.max_subscriptions_per_client {
        config.max_subscriptions_per_client = n.to_usize();
    }
    if let Some(n) = top.max_topic_length {
        config.max_topic_length = n.to_usize();
    }
    if let Some(n) = top.max_topic_levels {
        config.max_topic_levels = n.to_usize();
    }
    // The plugins validate the rest of these sections: which keys belong where depends on
    // which plugins are enabled.
    if let Some(auth) = top.auth {
        let chain: RawChain = deserialize_at(&auth, "auth", origin, &mut Vec::new())?;
        let limit: RawFailedLoginLimit = deserialize_at(&auth, "auth", origin, &mut Vec::new())?;
        config.auth = AuthConfig { plugins: chain.plugins, failed_logins: limit.resolve(), settings: auth };
    }
    if let Some(check) = top.topic_check {
        let chain: RawChain = deserialize_at(&check, "topic-check", origin, &mut Vec::new())?;
        config.topic_check = TopicCheckConfig {
            enabled: chain.enabled.is_some_and(|Flag(on)| on),
            plugins: chain.plugins,
            settings: check,
        };
    }
    if let Some(dir) = top.plugins_dir {
        config.plugins_dir = resolve_path(base_dir, dir);
    }
    config.plugins = top.plugins;
    if let Some(persistence) = top.persistence {
        config.persistence = persistence.resolve(base_dir, &mut warnings);
    }
    config.session_expiry_interval = top.session_expiry_interval.map(|Seconds(interval)| interval);
    config.root = root;
    Ok((config, warnings))
}

/// Parses YAML into a value tree. A key repeated in one mapping keeps its last
/// value, as PyYAML (which aMQTT uses) does, and is reported as a warning:
/// aMQTT's own sample config repeats `capath`, and it must load unchanged.
fn parse_yaml(yaml: &str, origin: &str) -> Result<(Value, Vec<ConfigWarning>), ConfigError> {
    let duplicates = RefCell::new(Vec::new());
    let seed = ValueSeed { path: String::new(), duplicates: &duplicates };
    let mut value = seed
        .deserialize(yaml_serde::Deserializer::from_str(yaml))
        .map_err(|err| ConfigError::Invalid { path: origin.to_string(), reason: format!("invalid YAML: {err}") })?;
    // PyYAML, which aMQTT uses, honours `<<: *anchor` merge keys.
    value.apply_merge().map_err(|err| ConfigError::Invalid {
        path: origin.to_string(),
        reason: format!("invalid YAML merge key (<<): {err}"),
    })?;
    let warnings = duplicates
        .into_inner()
        .into_iter()
        .map(|path| ConfigWarning { path, message: "duplicate key: the last value is used".to_string() })
        .collect();
    Ok((value, warnings))
}

/// Deserializes `value` into `T`, turning unknown keys into warnings and
/// errors into `Invalid` with the full key path (`prefix` + the path inside).
fn deserialize_at<T: DeserializeOwned>(
    value: &Value,
    prefix: &str,
    origin: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<T, ConfigError> {
    let mut ignored = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(ignored_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
    match serde_path_to_error::deserialize(de) {
        Ok(v) => {
            warnings.extend(
                ignored
                    .into_iter()
                    .map(|path| ConfigWarning { path: join_path(prefix, &path), message: UNKNOWN_KEY.to_string() }),
            );
            Ok(v)
        }
        Err(err) => {
            let path = join_path(prefix, &error_path(err.path()));
            Err(ConfigError::Invalid {
                path: if path.is_empty() { origin.to_string() } else { path },
                reason: err.into_inner().to_string(),
            })
        }
    }
}

/// serde's derived structs read an integer key as a field *index* (`0:` would
/// mean the first field), so a non-string key in a settings mapping is taken
/// out first and reported like any other unknown key.
fn drop_non_string_keys(value: &mut Value, prefix: &str, warnings: &mut Vec<ConfigWarning>) {
    let Value::Mapping(map) = value else { return };
    let odd: Vec<Value> = map.keys().filter(|k| !k.is_string()).cloned().collect();
    for key in odd {
        map.remove(&key);
        warnings.push(ConfigWarning { path: join_path(prefix, &key_segment(&key)), message: UNKNOWN_KEY.to_string() });
    }
}

fn key_segment(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_string(),
        _ => "?".to_string(),
    }
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => path.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

fn push_segment(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// serde_path_to_error's own Display prints "." for the root; we want "".
fn error_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } | serde_path_to_error::Segment::Enum { variant: key } => {
                push_segment(&mut out, key)
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// serde_ignored's own Display inserts "?" for every `Option` on the way,
/// which would make paths like `auth.?.foo`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => {
            let mut out = ignored_path(parent);
            push_segment(&mut out, key);
            out
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn resolve_path(base_dir: Option<&Path>, path: PathBuf) -> PathBuf {
    match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Returns None when the file has no `listeners` (the default listener stays).
fn build_listeners(
    value: Option<&Value>,
    base_dir: Option<&Path>,
    origin: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Option<Vec<ListenerConfig>>, ConfigError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Mapping(map)) => map,
        Some(other) => {
            return Err(ConfigError::Invalid {
                path: "listeners".to_string(),
                reason: format!("expected a mapping of listener names to listener settings, found {}", describe(other)),
            })
        }
    };

    let mut entries: Vec<(String, RawListener)> = Vec::with_capacity(map.len());
    for (key, entry) in map {
        let name = match key {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ConfigError::Invalid {
                    path: "listeners".to_string(),
                    reason: format!("a listener name must be a plain name such as my-tcp-1, found {}", describe(other)),
                })
            }
        };
        let prefix = format!("listeners.{name}");
        let mut entry = entry.clone();
        drop_non_string_keys(&mut entry, &prefix, warnings);
        let raw: Option<RawListener> = deserialize_at(&entry, &prefix, origin, warnings)?;
        entries.push((name, raw.unwrap_or_default()));
    }

    let defaults = entries.iter().find(|(name, _)| name == "default").map(|(_, raw)| raw.clone()).unwrap_or_default();

    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for (name, raw) in &entries {
        // aMQTT merges per key: a named listener takes from `default` every
        // key it does not set itself.
        let bind_owner = if raw.bind.is_some() { name.as_str() } else { "default" };
        let merged = raw.clone().inherit(&defaults);
        // aMQTT silently skips a listener without `bind` (typically `default`
        // used only as a template).
        let Some(bind) = merged.bind else { continue };
        let kind = merged.kind.unwrap_or(ListenerKind::Tcp);
        let bind_path = format!("listeners.{bind_owner}.bind");
        let addr = bind.resolve(kind).map_err(|reason| ConfigError::Invalid { path: bind_path.clone(), reason })?;
        // Two listeners on one address would fail at bind time with a less
        // helpful "address in use"; port 0 asks the OS for a fresh port each time.
        if addr.port() != 0 {
            if let Some(other) = listeners.iter().find(|l| l.bind == addr) {
                let inherited = if bind_owner == name { "" } else { " (inherited from listeners.default)" };
                return Err(ConfigError::Invalid {
                    path: format!("listeners.{name}.bind"),
                    reason: format!(
                        "address {addr}{inherited} is already used by listener \"{}\"; \
                         give each listener its own bind address",
                        other.name
                    ),
                });
            }
        }
        listeners.push(ListenerConfig {
            name: name.clone(),
            bind: addr,
            kind,
            max_connections: merged.max_connections.and_then(|m| m.0),
            ssl: merged.ssl.is_some_and(|Flag(on)| on),
            cafile: merged.cafile.map(|p| resolve_path(base_dir, p)),
            capath: merged.capath.map(|p| resolve_path(base_dir, p)),
            cadata: merged.cadata,
            certfile: merged.certfile.map(|p| resolve_path(base_dir, p)),
            keyfile: merged.keyfile.map(|p| resolve_path(base_dir, p)),
            require_certificate: merged.require_certificate.is_some_and(|Flag(on)| on),
            use_identity_as_username: merged.use_identity_as_username.is_some_and(|Flag(on)| on),
        });
    }

    if listeners.is_empty() {
        return Err(ConfigError::Invalid {
            path: "listeners".to_string(),
            reason: "no listener has a `bind` address, so the broker would not listen anywhere; \
                     add one, e.g. `bind: 0.0.0.0:1883` under listeners.default"
                .to_string(),
        });
    }
    Ok(Some(listeners))
}

// ---------------------------------------------------------------------------
// Raw (file-shaped) structures
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(expecting = "a mapping of broker settings (listeners, auth, topic-check, ...)")]
struct RawTop {
    listeners: Option<Value>,
    #[serde(rename = "timeout-disconnect-delay", alias = "timeout_disconnect_delay")]
    timeout_disconnect_delay: Option<Seconds<true>>,
    #[serde(rename = "connect-timeout", alias = "connect_timeout")]
    connect_timeout: Option<Seconds<false>>,
    #[serde(rename = "max-packet-size", alias = "max_packet_size")]
    max_packet_size: Option<Bounded<1, MAX_PACKET_SIZE_LIMIT>>,
    #[serde(rename = "max-inflight-messages", alias = "max_inflight_messages")]
    max_inflight_messages: Option<Bounded<1, 65535>>,
    /// At least 1: every message to a client passes through its queue, so 0 would drop them all.
    #[serde(rename = "max-queued-messages", alias = "max_queued_messages")]
    max_queued_messages: Option<Bounded<1, { i64::MAX }>>,
    #[serde(rename = "max-subscriptions-per-client", alias = "max_subscriptions_per_client")]
    max_subscriptions_per_client: Option<Bounded<0, { i64::MAX }>>,
    /// Above 65535 a topic could not be sent at all (its length prefix is 16 bits).
    #[serde(rename = "max-topic-length", alias = "max_topic_length")]
    max_topic_length: Option<Bounded<1, { MAX_TOPIC_LEN as i64 }>>,
    /// A 65535-byte topic of slashes alone has 65536 levels: a larger limit would be no limit.
    #[serde(rename = "max-topic-levels", alias = "max_topic_levels")]
    max_topic_levels: Option<Bounded<1, { MAX_TOPIC_LEN as i64 + 1 }>>,
    /// Read by the `broker_sys` plugin; declared here so that it is not reported as unknown.
    #[serde(alias = "sys-interval")]
    #[allow(dead_code)]
    sys_interval: Option<Bounded<0, { i64::MAX }>>,
    auth: Option<Value>,
    #[serde(rename = "topic-check", alias = "topic_check")]
    topic_check: Option<Value>,
    plugins: Option<Value>,
    #[serde(rename = "plugins-dir", alias = "plugins_dir")]
    plugins_dir: Option<PathBuf>,
    persistence: Option<RawPersistence>,
    /// aMQTT 0.12's spelling; 0 removes a persistent session as soon as it disconnects.
    #[serde(alias = "session-expiry-interval")]
    session_expiry_interval: Option<Seconds<true>>,
}

#[derive(Deserialize)]
#[serde(expecting = "a mapping of persistence settings (enabled, path, sync, sync-interval)")]
struct RawPersistence {
    enabled: Option<Flag>,
    path: Option<PathBuf>,
    sync: Option<SyncKind>,
    #[serde(rename = "sync-interval", alias = "sync_interval")]
    sync_interval: Option<Seconds<false>>,
}

impl RawPersistence {
    /// Checked even when disabled, so that turning it on later brings no surprise.
    fn resolve(self, base_dir: Option<&Path>, warnings: &mut Vec<ConfigWarning>) -> Option<PersistenceConfig> {
        let interval = self.sync_interval.map_or(Duration::from_secs(1), |Seconds(interval)| interval);
        let sync = match self.sync.unwrap_or(SyncKind::Always) {
            SyncKind::Always => {
                if self.sync_interval.is_some() {
                    warnings.push(ConfigWarning {
                        path: "persistence.sync-interval".to_string(),
                        message: "used only with `sync: periodic`; ignored with `sync: always`".to_string(),
                    });
                }
                PersistenceSync::Always
            }
            SyncKind::Periodic => PersistenceSync::Periodic(interval),
        };
        let path = resolve_path(base_dir, self.path.unwrap_or_else(|| PathBuf::from(DEFAULT_PERSISTENCE_PATH)));
        self.enabled.is_some_and(|Flag(on)| on).then_some(PersistenceConfig { path, sync })
    }
}

/// `persistence.sync`.
#[derive(Clone, Copy)]
enum SyncKind {
    Always,
    Periodic,
}

impl<'de> Deserialize<'de> for SyncKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SyncVisitor;
        impl Visitor<'_> for SyncVisitor {
            type Value = SyncKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("always or periodic")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SyncKind, E> {
                match v.to_ascii_lowercase().as_str() {
                    "always" => Ok(SyncKind::Always),
                    "periodic" => Ok(SyncKind::Periodic),
                    _ => Err(E::custom(format!("unknown sync mode {v:?}, expected always or periodic"))),
                }
            }
        }
        d.deserialize_any(SyncVisitor)
    }
}

/// The part of `auth` and `topic-check` that the broker reads itself: which plugins form the
/// chain. The other keys are the plugins' settings.
#[derive(Deserialize)]
#[serde(expecting = "a mapping of settings (plugins, and the plugins' own keys)")]
struct RawChain {
    plugins: Option<Vec<String>>,
    enabled: Option<Flag>,
}

/// The keys of `auth` that the broker reads itself: failed-login rate limiting.
#[derive(Deserialize)]
#[serde(expecting = "a mapping of auth settings")]
struct RawFailedLoginLimit {
    #[serde(rename = "max-failed-logins", alias = "max_failed_logins")]
    max_failed_logins: Option<Bounded<0, { u32::MAX as i64 }>>,
    #[serde(rename = "failed-login-window", alias = "failed_login_window")]
    failed_login_window: Option<Seconds<false>>,
    #[serde(rename = "failed-login-ban", alias = "failed_login_ban")]
    failed_login_ban: Option<Seconds<false>>,
}

impl RawFailedLoginLimit {
    fn resolve(self) -> FailedLoginLimit {
        let default = FailedLoginLimit::default();
        FailedLoginLimit {
            max_failures: self.max_failed_logins.map_or(default.max_failures, |n| n.0 as u32),
            window: self.failed_login_window.map_or(default.window, |Seconds(window)| window),
            ban: self.failed_login_ban.map_or(default.ban, |Seconds(ban)| ban),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(expecting = "a mapping of listener settings (bind, type, max-connections, ssl, ...)")]
struct RawListener {
    bind: Option<BindSpec>,
    #[serde(rename = "type")]
    kind: Option<ListenerKind>,
    #[serde(rename = "max-connections", alias = "max_connections")]
    max_connections: Option<MaxConnections>,
    ssl: Option<Flag>,
    cafile: Option<PathBuf>,
    capath: Option<PathBuf>,
    cadata: Option<String>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    #[serde(rename = "require-certificate", alias = "require_certificate")]
    require_certificate: Option<Flag>,
    #[serde(rename = "use-identity-as-username", alias = "use_identity_as_username")]
    use_identity_as_username: Option<Flag>,
}

impl RawListener {
    fn inherit(self, defaults: &RawListener) -> RawListener {
        let d = defaults.clone();
        RawListener {
            bind: self.bind.or(d.bind),
            kind: self.kind.or(d.kind),
            max_connections: self.max_connections.or(d.max_connections),
            ssl: self.ssl.or(d.ssl),
            cafile: self.cafile.or(d.cafile),
            capath: self.capath.or(d.capath),
            cadata: self.cadata.or(d.cadata),
            certfile: self.certfile.or(d.certfile),
            keyfile: self.keyfile.or(d.keyfile),
            require_certificate: self.require_certificate.or(d.require_certificate),
            use_identity_as_username: self.use_identity_as_username.or(d.use_identity_as_username),
        }
    }
}

// ---------------------------------------------------------------------------
// Value types with their own validation, so errors carry the key path
// ---------------------------------------------------------------------------

/// An integer in `MIN..=MAX`.
#[derive(Clone, Copy)]
struct Bounded<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Bounded<MIN, MAX> {
    fn to_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(IntVisitor)?;
        if v < i128::from(MIN) || v > i128::from(MAX) {
            let wanted = match (MIN, MAX) {
                (0, i64::MAX) => "use 0 or a positive integer".to_string(),
                (min, i64::MAX) => format!("use an integer of at least {min}"),
                (min, max) => format!("use an integer from {min} to {max}"),
            };
            return Err(de::Error::custom(format!("invalid value {v}: {wanted}")));
        }
        // In range, so it fits.
        Ok(Bounded(v as i64))
    }
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(i128::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(i128::from(v))
    }
}

/// A duration in seconds, integer or fractional; zero allowed when `ZERO`.
#[derive(Clone, Copy)]
struct Seconds<const ZERO: bool>(Duration);

impl<'de, const ZERO: bool> Deserialize<'de> for Seconds<ZERO> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = d.deserialize_any(SecondsVisitor)?;
        let ok = if ZERO { secs >= 0.0 } else { secs > 0.0 };
        let duration = if ok { Duration::try_from_secs_f64(secs).ok() } else { None };
        match duration {
            Some(duration) => Ok(Seconds(duration)),
            None => Err(de::Error::custom(format!(
                "invalid value {secs}: use {} number of seconds",
                if ZERO { "0 or a positive" } else { "a positive" }
            ))),
        }
    }
}

struct SecondsVisitor;

impl Visitor<'_> for SecondsVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
}

/// A boolean that also accepts on/off/yes/no/true/false strings in any case:
/// aMQTT's files say `ssl: on`, which PyYAML (YAML 1.1) reads as a boolean
/// but YAML 1.2 parsers such as ours read as a string.
#[derive(Clone, Copy)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FlagVisitor).map(Flag)
    }
}

struct FlagVisitor;

impl Visitor<'_> for FlagVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true or false (on/off and yes/no work too)")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v.to_ascii_lowercase().as_str() {
            "on" | "yes" | "true" => Ok(true),
            "off" | "no" | "false" => Ok(false),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }
}

/// aMQTT's `max-connections`: 0 or negative means unlimited.
#[derive(Clone, Copy)]
struct MaxConnections(Option<usize>);

impl<'de> Deserialize<'de> for MaxConnections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(IntVisitor)?;
        Ok(MaxConnections(if v <= 0 { None } else { Some(usize::try_from(v).unwrap_or(usize::MAX)) }))
    }
}

impl<'de> Deserialize<'de> for ListenerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = ListenerKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("tcp or ws")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenerKind, E> {
                match v.to_ascii_lowercase().as_str() {
                    "tcp" => Ok(ListenerKind::Tcp),
                    "ws" => Ok(ListenerKind::Ws),
                    _ => Err(E::custom(format!("unknown listener type {v:?}, expected tcp or ws"))),
                }
            }
        }
        d.deserialize_any(KindVisitor)
    }
}

/// A `bind` value, checked for syntax when read and resolved to an address
/// once the listener's type (which picks the default port) is known.
#[derive(Clone, Debug, PartialEq)]
struct BindSpec {
    text: String,
    /// None = all interfaces.
    host: Option<String>,
    /// None = the listener type's default port.
    port: Option<u16>,
}

impl BindSpec {
    /// aMQTT's forms: `host:port`, `:port`, `port`, `host`, `[v6]:port`,
    /// `[v6]` and the empty string; plus `*:port` and a bare IPv6 address.
    fn parse(text: &str) -> Result<BindSpec, String> {
        let s = text.trim();
        let invalid = |why: &str| format!("invalid address {text:?}: {why}");
        let port = |p: &str| -> Result<Option<u16>, String> {
            if p.is_empty() {
                return Ok(None);
            }
            p.parse::<u16>().map(Some).map_err(|_| invalid("the port must be a number from 0 to 65535"))
        };
        let host = |h: &str| match h {
            "" | "*" => None,
            h => Some(h.to_string()),
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address must be closed with `]`, e.g. [::]:1883"))?;
            addr.parse::<Ipv6Addr>().map_err(|_| invalid(&format!("{addr:?} is not an IPv6 address")))?;
            let after = match after {
                "" => "",
                a => a.strip_prefix(':').ok_or_else(|| invalid("expected `:port` after `]`, e.g. [::]:1883"))?,
            };
            (Some(addr.to_string()), port(after)?)
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (Some(s.to_string()), None)
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (host(h), port(p)?)
        } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            (None, port(s)?)
        } else {
            (host(s), None)
        };
        Ok(BindSpec { text: text.to_string(), host, port })
    }

    fn resolve(&self, kind: ListenerKind) -> Result<SocketAddr, String> {
        let port = self.port.unwrap_or(match kind {
            ListenerKind::Tcp => DEFAULT_TCP_PORT,
            ListenerKind::Ws => DEFAULT_WS_PORT,
        });
        let Some(host) = &self.host else {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|err| {
                format!(
                    "invalid address {:?}: cannot resolve host {host:?} ({err}); \
                     use an IP address or a name this machine can resolve",
                    self.text
                )
            })?
            .collect();
        // We bind one socket per listener; prefer IPv4 as aMQTT's users on
        // "localhost" mostly connect to 127.0.0.1.
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| format!("invalid address {:?}: host {host:?} resolves to no address", self.text))?;
        tracing::debug!(bind = %self.text, %addr, "resolved listener host name");
        Ok(addr)
    }
}

impl<'de> Deserialize<'de> for BindSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BindVisitor;
        impl Visitor<'_> for BindVisitor {
            type Value = BindSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address as \"host:port\", e.g. \"0.0.0.0:1883\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BindSpec, E> {
                BindSpec::parse(v).map_err(E::custom)
            }
            // `bind: 1883` is a YAML integer; read it as aMQTT reads "1883".
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BindSpec, E> {
                BindSpec::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(BindVisitor)
    }
}

// ---------------------------------------------------------------------------
// YAML value tree with duplicate-key paths
// ---------------------------------------------------------------------------

struct ValueSeed<'a> {
    path: String,
    /// Paths of keys that appeared more than once in their mapping.
    duplicates: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plain YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed {
            path: format!("{}[{}]", self.path, items.len()),
            duplicates: self.duplicates,
        })? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(ValueSeed { path: self.path.clone(), duplicates: self.duplicates })? {
            let mut path = self.path.clone();
            push_segment(&mut path, &key_segment(&key));
            if mapping.contains_key(&key) {
                self.duplicates.borrow_mut().push(path.clone());
            }
            let value = map.next_value_seed(ValueSeed { path, duplicates: self.duplicates })?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> (Config, Vec<ConfigWarning>) {
        Config::from_yaml_str(yaml, None).unwrap_or_else(|e| panic!("config should load: {e}"))
    }

    fn invalid(yaml: &str) -> (String, String) {
        match Config::from_yaml_str(yaml, None) {
            Err(ConfigError::Invalid { path, reason }) => (path, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn listener<'a>(config: &'a Config, name: &str) -> &'a ListenerConfig {
        config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener {name} in {:?}", config.listeners))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const SEED_EXAMPLE: &str = "
listeners:
    default:
        max-connections: 50000
        type: tcp
    my-tcp-1:
        bind: 127.0.0.1:1883
    my-tcp-2:
        bind: 1.2.3.4:1884
        max-connections: 1000
    my-tcp-ssl-1:
        bind: 127.0.0.1:8885
        ssl: on
        cafile: /some/cafile
        capath: /some/folder
        CADATA_KEY: certificate data
        certfile: /some/certfile
        keyfile: /some/key
    my-ws-1:
        bind: 0.0.0.0:8080
        type: ws
timeout-disconnect-delay: 2
auth:
    plugins: ['auth.anonymous']
    allow-anonymous: true
    password-file: /some/passwd_file
topic-check:
    enabled: true
    plugins: ['topic_acl']
    acl:
        alice: ['sensors/#']
";

    const DEFAULT_BROKER_YAML: &str = "
listeners:
    default:
        type: tcp
        bind: 0.0.0.0:1883
sys_interval: 20
auth:
    allow-anonymous: true
plugins:
    - auth_file
    - auth_anonymous
topic-check:
    enabled: False
";

    #[test]
    fn default_is_amqtt_without_config_file() {
        let config = Config::default();
        assert_eq!(config.listeners.len(), 1);
        let l = &config.listeners[0];
        assert_eq!(l.name, "default");
        assert_eq!(l.bind, addr(DEFAULT_BIND));
        assert_eq!(l.kind, ListenerKind::Tcp);
        assert_eq!(l.max_connections, None);
        assert!(!l.ssl);
        assert_eq!(config.auth, AuthConfig::default());
        assert!(!config.topic_check.enabled);
        assert_eq!(config.plugins_dir, Path::new("plugins"));
        assert_eq!(config.timeout_disconnect_delay, Duration::ZERO);
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.max_packet_size, 1024 * 1024);
        assert_eq!(config.max_inflight_messages, 20);
        assert_eq!(config.max_queued_messages, 1000);
        assert_eq!(config.max_subscriptions_per_client, 10_000);
        assert_eq!((config.max_topic_length, config.max_topic_levels), (65535, 128));
        assert_eq!(config.plugins, None);
        assert_eq!(config.base_dir, None);
        assert!(config.check_supported().is_ok());
    }

    #[test]
    fn with_tcp_listener_replaces_only_the_listener() {
        let config = Config::with_tcp_listener(addr("127.0.0.1:0"));
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].name, "default");
        assert_eq!(config.listeners[0].bind, addr("127.0.0.1:0"));
        assert_eq!(config.listeners[0].kind, ListenerKind::Tcp);
        let mut expected = Config::default();
        expected.listeners[0].bind = addr("127.0.0.1:0");
        assert_eq!(config, expected);
    }

    #[test]
    fn empty_and_comment_only_files_are_the_default() {
        for text in ["", "\n\n", "# nothing here\n  # indented comment\n", "---\n", "---\n# c\n"] {
            let (config, warnings) = Config::from_yaml_str(text, Some(Path::new("/etc/amqtt"))).unwrap();
            assert!(warnings.is_empty());
            let expected = Config {
                base_dir: Some(PathBuf::from("/etc/amqtt")),
                plugins_dir: PathBuf::from("/etc/amqtt/plugins"),
                ..Config::default()
            };
            assert_eq!(config, expected, "for {text:?}");
        }
    }

    #[test]
    fn seed_example_loads() {
        let yaml = SEED_EXAMPLE.replace("CADATA_KEY", "cadata");
        let (config, warnings) = load(&yaml);
        assert!(warnings.is_empty(), "{warnings:?}");
        // `default` has no bind: it is only a template.
        let names: Vec<_> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["my-tcp-1", "my-tcp-2", "my-tcp-ssl-1", "my-ws-1"]);

        let tcp1 = listener(&config, "my-tcp-1");
        assert_eq!(tcp1.bind, addr("127.0.0.1:1883"));
        assert_eq!(tcp1.kind, ListenerKind::Tcp);
        assert_eq!(tcp1.max_connections, Some(50000));
        assert!(!tcp1.ssl);

        let tcp2 = listener(&config, "my-tcp-2");
        assert_eq!(tcp2.bind, addr("1.2.3.4:1884"));
        assert_eq!(tcp2.max_connections, Some(1000));

        let ssl = listener(&config, "my-tcp-ssl-1");
        assert_eq!(ssl.bind, addr("127.0.0.1:8885"));
        assert!(ssl.ssl);
        assert_eq!(ssl.cafile.as_deref(), Some(Path::new("/some/cafile")));
        assert_eq!(ssl.capath.as_deref(), Some(Path::new("/some/folder")));
        assert_eq!(ssl.cadata.as_deref(), Some("certificate data"));
        assert_eq!(ssl.certfile.as_deref(), Some(Path::new("/some/certfile")));
        assert_eq!(ssl.keyfile.as_deref(), Some(Path::new("/some/key")));

        let ws = listener(&config, "my-ws-1");
        assert_eq!(ws.bind, addr("0.0.0.0:8080"));
        assert_eq!(ws.kind, ListenerKind::Ws);
        assert_eq!(ws.max_connections, Some(50000));

        assert_eq!(config.timeout_disconnect_delay, Duration::from_secs(2));
        assert_eq!(config.auth.plugins, Some(vec!["auth.anonymous".to_string()]));
        assert_eq!(config.auth.settings["allow-anonymous"], Value::Bool(true));
        assert_eq!(config.auth.settings["password-file"], Value::from("/some/passwd_file"));
        assert!(config.topic_check.enabled);
        assert_eq!(config.topic_check.plugins, Some(vec!["topic_acl".to_string()]));
        assert_eq!(config.topic_check.settings["acl"]["alice"][0], Value::from("sensors/#"));
        // Untouched keys keep their defaults.
        assert_eq!(config.max_inflight_messages, 20);
    }

    #[test]
    fn seed_example_with_its_duplicate_capath_loads_keeping_the_last_value() {
        // aMQTT's sample repeats `capath` (it meant `cadata`); PyYAML keeps the
        // last value, and so do we, with a warning naming the key.
        let yaml = SEED_EXAMPLE.replace("CADATA_KEY", "capath");
        let (config, warnings) = load(&yaml);
        assert_eq!(
            warnings,
            vec![ConfigWarning {
                path: "listeners.my-tcp-ssl-1.capath".into(),
                message: "duplicate key: the last value is used".into(),
            }]
        );
        let ssl = listener(&config, "my-tcp-ssl-1");
        assert_eq!(ssl.capath.as_deref(), Some(Path::new("certificate data")));
        assert_eq!(ssl.cadata, None);
    }

    #[test]
    fn duplicate_keys_anywhere_warn_with_their_path() {
        let (config, warnings) = load("sys_interval: 1\nsys_interval: 2\n");
        assert_eq!(config.root["sys_interval"], Value::from(2));
        assert_eq!(warnings[0].path, "sys_interval");
        let (config, warnings) = load("topic-check:\n  acl:\n    bob: [a]\n    bob: [b]\n");
        assert_eq!(config.topic_check.settings["acl"]["bob"][0], Value::from("b"));
        assert_eq!(warnings[0].path, "topic-check.acl.bob");
        let (_, warnings) = load("listeners:\n  a: {bind: ':1', bind: ':2'}\n");
        assert_eq!(warnings[0].path, "listeners.a.bind");
    }

    #[test]
    fn amqtt_default_broker_yaml_loads() {
        let (config, warnings) = load(DEFAULT_BROKER_YAML);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].name, "default");
        assert_eq!(config.listeners[0].bind, addr("0.0.0.0:1883"));
        assert_eq!(config.listeners[0].kind, ListenerKind::Tcp);
        assert_eq!(config.root["sys_interval"], Value::from(20));
        assert_eq!(config.auth.settings["allow-anonymous"], Value::Bool(true));
        assert!(!config.topic_check.enabled);
        let plugins: Vec<String> = yaml_serde::from_value(config.plugins.clone().unwrap()).unwrap();
        assert_eq!(plugins, ["auth_file", "auth_anonymous"]);
        assert!(config.check_supported().is_ok());
    }

    #[test]
    fn amqtt_012_config_with_plugin_mapping_loads() {
        let yaml = "
listeners:
  default:
    type: tcp
    bind: 0.0.0.0:1883
    max_connections: 0
  ws:
    type: ws
    bind: 0.0.0.0:8080
timeout_disconnect_delay: 0
plugins:
  amqtt.plugins.logging_amqtt.EventLoggerPlugin:
  amqtt.plugins.logging_amqtt.PacketLoggerPlugin:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: false
  amqtt.plugins.sys.broker.BrokerSysPlugin:
    sys_interval: 20
";
        let (config, warnings) = load(yaml);
        assert!(warnings.is_empty(), "keys inside plugins are the plugins' business: {warnings:?}");
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].max_connections, None);
        assert_eq!(config.listeners[1].kind, ListenerKind::Ws);
        let plugins = config.plugins.as_ref().unwrap().as_mapping().unwrap();
        assert_eq!(plugins.len(), 4);
        let anon = &plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"];
        assert_eq!(anon["allow_anonymous"], Value::Bool(false));
        assert!(plugins["amqtt.plugins.logging_amqtt.EventLoggerPlugin"].is_null());
    }

    #[test]
    fn underscore_spellings_are_accepted() {
        let yaml = "
listeners:
  default:
    bind: 127.0.0.1:1883
    max_connections: 7
timeout_disconnect_delay: 3
connect_timeout: 4
max_packet_size: 1000
max_inflight_messages: 5
max_queued_messages: 6
max_subscriptions_per_client: 8
max_topic_length: 10
max_topic_levels: 11
sys-interval: 9
auth:
  allow_anonymous: false
  password_file: /etc/passwd.txt
topic_check:
  enabled: true
";
        let (config, warnings) = load(yaml);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.listeners[0].max_connections, Some(7));
        assert_eq!(config.timeout_disconnect_delay, Duration::from_secs(3));
        assert_eq!(config.connect_timeout, Duration::from_secs(4));
        assert_eq!(config.max_packet_size, 1000);
        assert_eq!(config.max_inflight_messages, 5);
        assert_eq!(config.max_queued_messages, 6);
        assert_eq!(config.max_subscriptions_per_client, 8);
        assert_eq!((config.max_topic_length, config.max_topic_levels), (10, 11));
        assert_eq!(config.root["sys-interval"], Value::from(9));
        assert_eq!(config.auth.settings["allow_anonymous"], Value::Bool(false));
        assert!(config.topic_check.enabled);
    }

    #[test]
    fn hyphenated_spellings_of_our_own_keys() {
        let yaml = "
connect-timeout: 2.5
max-packet-size: 268435460
max-inflight-messages: 65535
max-queued-messages: 1
max-subscriptions-per-client: 0
max-topic-length: 65535
max-topic-levels: 65536
sys_interval: 0
";
        let (config, _) = load(yaml);
        assert_eq!(config.connect_timeout, Duration::from_millis(2500));
        assert_eq!(config.max_packet_size, 268_435_460);
        assert_eq!(config.max_inflight_messages, 65535);
        assert_eq!(config.max_queued_messages, 1);
        assert_eq!(config.max_subscriptions_per_client, 0);
        assert_eq!((config.max_topic_length, config.max_topic_levels), (65535, 65536));
        // No `listeners` key: aMQTT's default listener.
        assert_eq!(config.listeners, Config::default().listeners);
    }

    #[test]
    fn unknown_keys_warn_with_their_path_and_the_config_still_loads() {
        let yaml = "
listeners:
  default:
    bnid: 0.0.0.0:1883
    bind: 0.0.0.0:1883
  other:
    bind: 127.0.0.1:1884
    reader: some.module
some-future-key: 10
auth:
  allow-anonymous: false
  extra: {nested: [1, 2]}
topic-check:
  enabled: true
  publish-acl: {}
";
        let (config, warnings) = load(yaml);
        let got: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "some-future-key: unknown key, ignored",
                "listeners.default.bnid: unknown key, ignored",
                "listeners.other.reader: unknown key, ignored",
            ]
        );
        assert_eq!(config.listeners.len(), 2);
        // The plugins check their own sections' keys (see plugins::setup).
        assert_eq!(config.auth.settings["extra"]["nested"][1], Value::from(2));
        assert!(config.topic_check.enabled);
    }

    #[test]
    fn invalid_bind_is_reported_at_the_listener_key() {
        let (path, reason) = invalid("listeners:\n  default:\n    bind: 0.0.0.0:99999\n");
        assert_eq!(path, "listeners.default.bind");
        assert_eq!(reason, "invalid address \"0.0.0.0:99999\": the port must be a number from 0 to 65535");

        let (path, reason) = invalid("listeners:\n  my-tcp:\n    bind: '[::1:1883'\n");
        assert_eq!(path, "listeners.my-tcp.bind");
        assert!(reason.contains("closed with `]`"), "{reason}");

        let (path, reason) = invalid("listeners:\n  my-tcp:\n    bind: [1, 2]\n");
        assert_eq!(path, "listeners.my-tcp.bind");
        assert!(reason.starts_with("invalid type: sequence, expected an address"), "{reason}");

        let (path, reason) = invalid("listeners:\n  my-tcp:\n    bind: no-such-host.invalid:1883\n");
        assert_eq!(path, "listeners.my-tcp.bind");
        assert!(reason.contains("cannot resolve host \"no-such-host.invalid\""), "{reason}");
    }

    #[test]
    fn invalid_values_are_reported_with_their_path() {
        let cases: &[(&str, &str, &str)] = &[
            ("sys_interval: x", "sys_interval", "invalid type: string \"x\", expected an integer"),
            ("sys_interval: -1", "sys_interval", "invalid value -1: use 0 or a positive integer"),
            ("sys_interval: 1.5", "sys_interval", "invalid type: floating point `1.5`, expected an integer"),
            (
                "listeners:\n  x:\n    bind: ':1'\n    type: udp",
                "listeners.x.type",
                "unknown listener type \"udp\", expected tcp or ws",
            ),
            (
                "timeout-disconnect-delay: -1",
                "timeout-disconnect-delay",
                "invalid value -1: use 0 or a positive number of seconds",
            ),
            (
                "timeout_disconnect_delay: -0.5",
                "timeout_disconnect_delay",
                "invalid value -0.5: use 0 or a positive number of seconds",
            ),
            (
                "timeout-disconnect-delay: soon",
                "timeout-disconnect-delay",
                "invalid type: string \"soon\", expected a number of seconds",
            ),
            ("connect-timeout: -5", "connect-timeout", "invalid value -5: use a positive number of seconds"),
            ("connect-timeout: 0", "connect-timeout", "invalid value 0: use a positive number of seconds"),
            ("max-packet-size: 0", "max-packet-size", "invalid value 0: use an integer from 1 to 268435460"),
            (
                "max-packet-size: 268435461",
                "max-packet-size",
                "invalid value 268435461: use an integer from 1 to 268435460",
            ),
            ("max-inflight-messages: 0", "max-inflight-messages", "invalid value 0: use an integer from 1 to 65535"),
            (
                "max-inflight-messages: 65536",
                "max-inflight-messages",
                "invalid value 65536: use an integer from 1 to 65535",
            ),
            ("max-queued-messages: -3", "max-queued-messages", "invalid value -3: use an integer of at least 1"),
            ("max-queued-messages: 0", "max-queued-messages", "invalid value 0: use an integer of at least 1"),
            ("max-topic-length: 0", "max-topic-length", "invalid value 0: use an integer from 1 to 65535"),
            ("max_topic_length: 65536", "max_topic_length", "invalid value 65536: use an integer from 1 to 65535"),
            ("max-topic-length: long", "max-topic-length", "invalid type: string \"long\", expected an integer"),
            ("max-topic-levels: 0", "max-topic-levels", "invalid value 0: use an integer from 1 to 65536"),
            ("max_topic_levels: -1", "max_topic_levels", "invalid value -1: use an integer from 1 to 65536"),
            ("max-topic-levels: 65537", "max-topic-levels", "invalid value 65537: use an integer from 1 to 65536"),
            (
                "max-subscriptions-per-client: many",
                "max-subscriptions-per-client",
                "invalid type: string \"many\", expected an integer",
            ),
            (
                "listeners:\n  x:\n    bind: ':1'\n    ssl: maybe",
                "listeners.x.ssl",
                "invalid value: string \"maybe\", expected true or false (on/off and yes/no work too)",
            ),
            (
                "listeners:\n  x:\n    bind: ':1'\n    max-connections: lots",
                "listeners.x.max-connections",
                "invalid type: string \"lots\", expected an integer",
            ),
            (
                "topic-check:\n  enabled: perhaps",
                "topic-check.enabled",
                "invalid value: string \"perhaps\", expected true or false (on/off and yes/no work too)",
            ),
            ("auth:\n  plugins: auth_file", "auth.plugins", "invalid type: string \"auth_file\", expected a sequence"),
            (
                "auth: yes",
                "auth",
                "invalid type: string \"yes\", expected a mapping of settings (plugins, and the plugins' own keys)",
            ),
            (
                "topic-check:\n  enabled: 1",
                "topic-check.enabled",
                "invalid type: integer `1`, expected true or false (on/off and yes/no work too)",
            ),
        ];
        for (yaml, want_path, want_reason) in cases {
            let (path, reason) = invalid(yaml);
            assert_eq!((path.as_str(), reason.as_str()), (*want_path, *want_reason), "for {yaml:?}");
        }
    }

    #[test]
    fn structural_errors() {
        let (path, reason) = invalid("- a\n- b\n");
        assert_eq!(path, "config");
        assert!(reason.starts_with("invalid type: sequence, expected a mapping of broker settings"), "{reason}");

        let (path, reason) = invalid("listeners: [a, b]\n");
        assert_eq!(path, "listeners");
        assert_eq!(reason, "expected a mapping of listener names to listener settings, found a list");

        let (path, reason) = invalid("listeners:\n  x: 1883\n");
        assert_eq!(path, "listeners.x");
        assert!(
            reason.starts_with("invalid type: integer `1883`, expected a mapping of listener settings"),
            "{reason}"
        );

        let (path, reason) = invalid("listeners:\n  default:\n    type: tcp\n  other:\n    max-connections: 5\n");
        assert_eq!(path, "listeners");
        assert!(reason.starts_with("no listener has a `bind` address"), "{reason}");

        let (path, _) = invalid("listeners: {}\n");
        assert_eq!(path, "listeners");

        let (path, reason) = invalid("a: 1\n---\nb: 2\n");
        assert_eq!(path, "config");
        assert!(reason.contains("more than one document"), "{reason}");
    }

    #[test]
    fn yaml_syntax_error_names_the_file_line_and_column() {
        let (path, reason) = invalid("listeners:\n  default:\n    bind: [1883\n");
        assert_eq!(path, "config");
        assert!(reason.starts_with("invalid YAML: "), "{reason}");
        assert!(reason.contains("line 4 column 1"), "{reason}");

        let dir = temp_dir("syntax");
        let file = dir.join("broker.yaml");
        std::fs::write(&file, "auth: {allow-anonymous: true\n").unwrap();
        match Config::load(&file) {
            Err(ConfigError::Invalid { path, reason }) => {
                assert_eq!(path, file.display().to_string());
                assert!(reason.contains("line"), "{reason}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn load_reports_a_missing_file() {
        let file = temp_dir("missing").join("nope.yaml");
        let err = Config::load(&file).unwrap_err();
        assert!(matches!(&err, ConfigError::Read { path, .. } if path == &file));
        assert!(err.to_string().starts_with(&format!("cannot read config file {}: ", file.display())));
    }

    #[test]
    fn load_resolves_relative_paths_against_the_files_folder() {
        let dir = temp_dir("load");
        let file = dir.join("broker.yaml");
        std::fs::write(
            &file,
            "listeners:\n  default:\n    bind: 127.0.0.1:0\n    certfile: certs/server.pem\n    keyfile: /abs/key.pem\nauth:\n  password-file: passwd\n",
        )
        .unwrap();
        let (config, warnings) = Config::load(&file).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(config.base_dir.as_deref(), Some(dir.as_path()));
        assert_eq!(config.listeners[0].certfile, Some(dir.join("certs/server.pem")));
        assert_eq!(config.listeners[0].keyfile, Some(PathBuf::from("/abs/key.pem")));
        assert_eq!(config.plugins_dir, dir.join("plugins"));
        let (config, _) = Config::from_yaml_str("plugins-dir: /opt/amqtt/plugins\n", Some(&dir)).unwrap();
        assert_eq!(config.plugins_dir, Path::new("/opt/amqtt/plugins"));
        let (config, _) = Config::from_yaml_str("plugins_dir: so\n", Some(&dir)).unwrap();
        assert_eq!(config.plugins_dir, dir.join("so"));
    }

    #[test]
    fn relative_paths_resolve_against_base_dir_only_when_given() {
        let yaml = "
listeners:
  default:
    certfile: server.crt
    cafile: ../ca.pem
    capath: cas
  secure:
    bind: 127.0.0.1:8883
    keyfile: keys/server.key
";
        let (config, _) = Config::from_yaml_str(yaml, Some(Path::new("/etc/amqtt"))).unwrap();
        let l = listener(&config, "secure");
        assert_eq!(l.certfile, Some(PathBuf::from("/etc/amqtt/server.crt")));
        assert_eq!(l.keyfile, Some(PathBuf::from("/etc/amqtt/keys/server.key")));
        assert_eq!(l.cafile, Some(PathBuf::from("/etc/amqtt/../ca.pem")));
        assert_eq!(l.capath, Some(PathBuf::from("/etc/amqtt/cas")));

        let (config, _) = Config::from_yaml_str(yaml, None).unwrap();
        assert_eq!(listener(&config, "secure").certfile, Some(PathBuf::from("server.crt")));
    }

    #[test]
    fn named_listeners_inherit_each_unset_key_from_default() {
        let yaml = "
listeners:
  default:
    type: ws
    max-connections: 10
    ssl: on
    certfile: /c.pem
    keyfile: /k.pem
    require-certificate: true
    use_identity_as_username: yes
  a:
    bind: 127.0.0.1:9001
  b:
    bind: 127.0.0.1:9002
    type: tcp
    max_connections: -1
    ssl: off
    keyfile: /other.key
    require_certificate: false
";
        let (config, warnings) = load(yaml);
        assert!(warnings.is_empty());
        let a = listener(&config, "a");
        assert_eq!((a.kind, a.max_connections, a.ssl), (ListenerKind::Ws, Some(10), true));
        assert_eq!(a.certfile.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(a.keyfile.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!((a.require_certificate, a.use_identity_as_username), (true, true));
        let b = listener(&config, "b");
        // `max_connections` overrides the default's `max-connections`: merged per key, not per spelling.
        assert_eq!((b.kind, b.max_connections, b.ssl), (ListenerKind::Tcp, None, false));
        assert_eq!(b.certfile.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(b.keyfile.as_deref(), Some(Path::new("/other.key")));
        assert_eq!((b.require_certificate, b.use_identity_as_username), (false, true));
    }

    #[test]
    fn listeners_keep_yaml_order_and_default_is_a_listener_when_bound() {
        let yaml = "
listeners:
  zeta:
    bind: 127.0.0.1:1001
  default:
    bind: 127.0.0.1:1000
  alpha:
    bind: 127.0.0.1:1002
";
        let (config, _) = load(yaml);
        let names: Vec<_> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["zeta", "default", "alpha"]);
    }

    #[test]
    fn a_listener_inheriting_the_defaults_bind_clashes_with_it() {
        let yaml = "listeners:\n  default:\n    bind: 0.0.0.0:1883\n  extra:\n    max-connections: 3\n";
        let (path, reason) = invalid(yaml);
        assert_eq!(path, "listeners.extra.bind");
        assert!(
            reason.starts_with(
                "address 0.0.0.0:1883 (inherited from listeners.default) is already used by listener \"default\""
            ),
            "{reason}"
        );
        // Port 0 asks for a fresh port each time: no clash.
        let (config, _) = load("listeners:\n  default:\n    bind: 127.0.0.1:0\n  extra:\n    max-connections: 3\n");
        assert_eq!(config.listeners.len(), 2);
    }

    #[test]
    fn ssl_accepts_yaml_booleans_and_amqtt_strings() {
        for (text, want) in [
            ("on", true),
            ("ON", true),
            ("'on'", true),
            ("true", true),
            ("True", true),
            ("yes", true),
            ("off", false),
            ("Off", false),
            ("false", false),
            ("no", false),
            ("FALSE", false),
        ] {
            let yaml = format!("listeners:\n  default:\n    bind: 127.0.0.1:1883\n    ssl: {text}\n");
            let (config, _) = load(&yaml);
            assert_eq!(config.listeners[0].ssl, want, "ssl: {text}");
        }
        let (config, _) = load("listeners:\n  default:\n    bind: 127.0.0.1:1883\n    ssl:\n");
        assert!(!config.listeners[0].ssl, "an empty ssl is off");
    }

    #[test]
    fn max_connections_zero_or_negative_is_unlimited() {
        for (text, want) in [("0", None), ("-1", None), ("-100", None), ("1", Some(1)), ("50000", Some(50000))] {
            let yaml = format!("listeners:\n  default:\n    bind: ':1883'\n    max-connections: {text}\n");
            assert_eq!(load(&yaml).0.listeners[0].max_connections, want, "max-connections: {text}");
        }
    }

    #[test]
    fn bind_forms() {
        let cases = [
            ("':1883'", ListenerKind::Tcp, "0.0.0.0:1883"),
            ("'*:1884'", ListenerKind::Tcp, "0.0.0.0:1884"),
            ("'[::]:1885'", ListenerKind::Tcp, "[::]:1885"),
            ("'[::1]'", ListenerKind::Tcp, "[::1]:1883"),
            ("'::1'", ListenerKind::Tcp, "[::1]:1883"),
            ("'1886'", ListenerKind::Tcp, "0.0.0.0:1886"),
            ("1887", ListenerKind::Tcp, "0.0.0.0:1887"),
            ("127.0.0.1", ListenerKind::Tcp, "127.0.0.1:1883"),
            ("'127.0.0.1:'", ListenerKind::Tcp, "127.0.0.1:1883"),
            ("''", ListenerKind::Tcp, "0.0.0.0:1883"),
            ("127.0.0.1", ListenerKind::Ws, "127.0.0.1:8883"),
            ("127.0.0.1:0", ListenerKind::Tcp, "127.0.0.1:0"),
        ];
        for (bind, kind, want) in cases {
            let yaml = format!("listeners:\n  default:\n    bind: {bind}\n    type: {kind}\n");
            let (config, _) = load(&yaml);
            assert_eq!(config.listeners[0].bind, addr(want), "bind: {bind} ({kind})");
        }
    }

    #[test]
    fn bind_host_names_are_resolved_at_load() {
        let (config, _) = load("listeners:\n  default:\n    bind: localhost:1883\n");
        let bind = config.listeners[0].bind;
        assert!(bind.ip().is_loopback(), "{bind}");
        assert_eq!(bind.port(), 1883);
    }

    #[test]
    fn check_supported_accepts_ws_and_tls_listeners() {
        let (config, _) =
            load("listeners:\n  default:\n    bind: ':1883'\n  my-ws:\n    bind: ':8080'\n    type: ws\n");
        assert!(config.check_supported().is_ok());

        // TLS on tcp listeners is served: its files are checked when the broker starts.
        let (config, _) = load("listeners:\n  secure:\n    bind: ':8883'\n    ssl: on\n");
        assert!(config.check_supported().is_ok());

        let (config, _) = load("listeners:\n  plain:\n    bind: ':1883'\n    ssl: off\n");
        assert!(config.check_supported().is_ok());
    }

    #[test]
    fn topic_check_acl_and_auth_plugins() {
        let yaml = "
auth:
  plugins: []
topic-check:
  enabled: yes
  plugins: [topic_acl, topic_taboo]
  acl:
    alice: ['sensors/#', 'alice/+']
    bob:
    anonymous: []
";
        let (config, _) = load(yaml);
        assert_eq!(config.auth.plugins, Some(vec![]));
        assert!(config.topic_check.enabled);
        assert_eq!(config.topic_check.plugins, Some(vec!["topic_acl".to_string(), "topic_taboo".to_string()]));
        assert_eq!(config.topic_check.settings["acl"]["alice"][1], Value::from("alice/+"));
    }

    #[test]
    fn null_sections_keep_their_defaults() {
        let (config, warnings) = load("listeners:\nauth:\ntopic-check:\nplugins:\nsys_interval:\n");
        assert!(warnings.is_empty());
        let expected = Config { root: config.root.clone(), ..Config::default() };
        assert_eq!(config, expected);
    }

    #[test]
    fn yaml_merge_keys_work_as_in_pyyaml() {
        let yaml = "
common: &common
  type: tcp
  max-connections: 4
listeners:
  default:
    <<: *common
    bind: 127.0.0.1:1883
";
        let (config, warnings) = load(yaml);
        assert_eq!(config.listeners[0].max_connections, Some(4));
        let got: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["common: unknown key, ignored"]);
    }

    #[test]
    fn non_string_keys_are_unknown_keys_not_field_indexes() {
        let yaml = "
0: [not, listeners]
true: 1
auth:
  1: x
listeners:
  default:
    bind: 127.0.0.1:1883
    2: y
";
        let (config, warnings) = load(yaml);
        assert_eq!(config.listeners[0].bind, addr("127.0.0.1:1883"));
        let got: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "0: unknown key, ignored",
                "true: unknown key, ignored",
                "auth.1: unknown key, ignored",
                "listeners.default.2: unknown key, ignored",
            ]
        );
    }

    #[test]
    fn display_forms() {
        assert_eq!(ListenerKind::Tcp.to_string(), "tcp");
        assert_eq!(ListenerKind::Ws.to_string(), "ws");
        let w = ConfigWarning { path: "listeners.default.bnid".into(), message: "unknown key, ignored".into() };
        assert_eq!(w.to_string(), "listeners.default.bnid: unknown key, ignored");
        let e = ConfigError::Invalid { path: "sys_interval".into(), reason: "bad".into() };
        assert_eq!(e.to_string(), "sys_interval: bad");
    }

    #[test]
    fn persistence_is_off_unless_enabled() {
        let (config, warnings) = load("listeners:\n  default:\n    bind: ':1883'\n");
        assert!(warnings.is_empty());
        assert_eq!((config.persistence, config.session_expiry_interval), (None, None));
        for yaml in ["persistence:\n", "persistence: {}\n", "persistence:\n  enabled: false\n  sync: periodic\n"] {
            let (config, warnings) = load(yaml);
            assert_eq!(config.persistence, None, "{yaml}");
            assert!(warnings.is_empty(), "{yaml}: {warnings:?}");
        }
    }

    #[test]
    fn persistence_defaults_and_paths() {
        let (config, warnings) =
            Config::from_yaml_str("persistence:\n  enabled: yes\n", Some(Path::new("/etc/amqtt"))).unwrap();
        assert!(warnings.is_empty());
        let want = PersistenceConfig { path: PathBuf::from("/etc/amqtt/amqtt.redb"), sync: PersistenceSync::Always };
        assert_eq!(config.persistence, Some(want));

        let yaml = "persistence:\n  enabled: on\n  path: data/broker.redb\n  sync: Periodic\n  sync_interval: 0.25\n";
        let (config, _) = Config::from_yaml_str(yaml, Some(Path::new("/etc/amqtt"))).unwrap();
        let want = PersistenceConfig {
            path: PathBuf::from("/etc/amqtt/data/broker.redb"),
            sync: PersistenceSync::Periodic(Duration::from_millis(250)),
        };
        assert_eq!(config.persistence, Some(want));

        // Without a config file: relative to the working directory; periodic defaults to 1 s.
        let yaml = "persistence:\n  enabled: true\n  path: /var/lib/amqtt/x.redb\n  sync: periodic\n";
        let (config, _) = load(yaml);
        let want = PersistenceConfig {
            path: PathBuf::from("/var/lib/amqtt/x.redb"),
            sync: PersistenceSync::Periodic(Duration::from_secs(1)),
        };
        assert_eq!(config.persistence, Some(want));
        let (config, _) = load("persistence:\n  enabled: true\n  sync-interval: 5\n  sync: periodic\n");
        assert_eq!(config.persistence.unwrap().path, Path::new(DEFAULT_PERSISTENCE_PATH));
    }

    #[test]
    fn persistence_warnings() {
        let yaml = "persistence:\n  enabled: true\n  sync: always\n  sync-interval: 2\n  fsync: yes\n  3: x\n";
        let (config, warnings) = load(yaml);
        assert_eq!(config.persistence.map(|p| p.sync), Some(PersistenceSync::Always));
        let got: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "persistence.3: unknown key, ignored",
                "persistence.fsync: unknown key, ignored",
                "persistence.sync-interval: used only with `sync: periodic`; ignored with `sync: always`",
            ]
        );
    }

    #[test]
    fn session_expiry_interval() {
        let (config, warnings) = load("session_expiry_interval: 3600\n");
        assert!(warnings.is_empty());
        assert_eq!(config.session_expiry_interval, Some(Duration::from_secs(3600)));
        assert_eq!(load("session-expiry-interval: 0.5\n").0.session_expiry_interval, Some(Duration::from_millis(500)));
        assert_eq!(load("session_expiry_interval: 0\n").0.session_expiry_interval, Some(Duration::ZERO));
        assert_eq!(load("session_expiry_interval:\n").0.session_expiry_interval, None);
    }

    #[test]
    fn invalid_persistence_values_name_their_key() {
        let cases = [
            (
                "persistence: yes",
                "persistence",
                "invalid type: string \"yes\", expected a mapping of persistence settings (enabled, path, sync, sync-interval)",
            ),
            (
                "persistence:\n  enabled: maybe",
                "persistence.enabled",
                "invalid value: string \"maybe\", expected true or false (on/off and yes/no work too)",
            ),
            (
                "persistence:\n  sync: sometimes",
                "persistence.sync",
                "unknown sync mode \"sometimes\", expected always or periodic",
            ),
            ("persistence:\n  sync: 1", "persistence.sync", "invalid type: integer `1`, expected always or periodic"),
            (
                "persistence:\n  sync-interval: 0",
                "persistence.sync-interval",
                "invalid value 0: use a positive number of seconds",
            ),
            (
                "persistence:\n  sync_interval: -1",
                "persistence.sync_interval",
                "invalid value -1: use a positive number of seconds",
            ),
            ("persistence:\n  path: [a]", "persistence.path", "invalid type: sequence, expected path string"),
            (
                "session_expiry_interval: -5",
                "session_expiry_interval",
                "invalid value -5: use 0 or a positive number of seconds",
            ),
            (
                "session_expiry_interval: soon",
                "session_expiry_interval",
                "invalid type: string \"soon\", expected a number of seconds",
            ),
        ];
        for (yaml, want_path, want_reason) in cases {
            let (path, reason) = invalid(yaml);
            assert_eq!((path.as_str(), reason.as_str()), (want_path, want_reason), "for {yaml:?}");
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amqtt-config-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
