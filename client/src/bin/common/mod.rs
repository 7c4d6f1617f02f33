//! What `amqtt_pub` and `amqtt_sub` share: the connection flags, the configuration they build,
//! logging, signals, error messages and exit codes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;

use amqtt_client::{parse_url, ClientConfig, ClientError, QoS, Scheme, WillConfig};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser};
use tracing_subscriber::EnvFilter;

/// Exit status of a usage error or any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status when the broker refused the connection, could not be reached, or the connection
/// was lost for good.
pub const EXIT_CONNECTION: u8 = 2;

/// The URL used when neither `--url` nor the config file's `connection.uri` names one.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";

/// The end of `--help`: the command's examples, then the exit statuses.
pub fn after_help(examples: &str) -> String {
    format!("Examples:\n{examples}\n{EXIT_STATUS_HELP}")
}

/// The exit status section of `--help`, the same for both commands.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (for amqtt_sub also: stopped by SIGINT/Ctrl-C or SIGTERM after a clean disconnect)
  1  usage error, unreadable file (certificates and keys included), invalid URL, or any other
     failure
  2  the broker refused the connection (the reason is printed, e.g. \"not authorized\"), could not
     be reached after the configured retries, failed the TLS or WebSocket handshake (e.g. its
     certificate is not trusted), or the connection was lost for good";

/// The flags both commands take to connect: aMQTT 0.12's, plus `--cert-file` / `--key-file`
/// and mosquitto's `--insecure`.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Broker URL: [mqtt|ws][s]://[username][:password]@host[:port][/path] (user name and
    /// password percent-encoded). mqtt:// is TCP (default port 1883), mqtts:// TLS (8883),
    /// ws:// WebSocket (80) and wss:// WebSocket over TLS (443); a WebSocket URL keeps its path,
    /// e.g. ws://broker:8080/mqtt. Default: `connection.uri` of the config file, else
    /// mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// aMQTT client configuration file (YAML: keep_alive, reconnect_retries, will, topics,
    /// connection, username, password...). Flags given on the command line win over it.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Client id. Default: the command name, the process id and the host name, as aMQTT makes
    /// it: <command>/<pid>-<hostname>, e.g. amqtt_sub/1234-myhost.
    #[arg(short = 'i', long = "client-id", value_name = "ID")]
    pub client_id: Option<String>,

    /// Keep-alive in seconds sent to the broker (0 disables it). Default: keep_alive of the
    /// config file, else 10.
    #[arg(short = 'k', long = "keep-alive", value_name = "SECONDS")]
    pub keep_alive: Option<u16>,

    /// Connect with the clean-session flag: the broker forgets any earlier session of this
    /// client id. Without it, cleansession of the config file applies (default true).
    #[arg(long = "clean-session")]
    pub clean_session: bool,

    /// TLS (mqtts://, wss://): PEM file of the CA certificates trusted to sign the broker's
    /// certificate. --ca-file, --ca-path and --ca-data add up; with none of them (nor
    /// cafile/capath/cadata in the config file) the system's CA certificates are trusted.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// TLS: directory of PEM CA certificate files (e.g. /etc/ssl/certs); every file holding
    /// certificates is read.
    #[arg(long = "ca-path", value_name = "DIR")]
    pub ca_path: Option<PathBuf>,

    /// TLS: the CA certificates themselves, as PEM text (-----BEGIN CERTIFICATE----- ...).
    #[arg(long = "ca-data", value_name = "PEM")]
    pub ca_data: Option<String>,

    /// TLS: PEM file of this client's certificate (chain), for brokers that require one
    /// (mutual TLS). Needs --key-file.
    #[arg(long = "cert-file", value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// TLS: PEM file of the private key of --cert-file (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "key-file", value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// TLS: do not check that the broker's certificate names the host of the URL (it must
    /// still be signed by a trusted CA), as mosquitto_pub --insecure; check_hostname: false in
    /// the config file. To skip verification altogether, set verify_cert: false there.
    #[arg(long = "insecure")]
    pub insecure: bool,

    /// Topic of the will: the message the broker publishes if this client goes away without
    /// disconnecting (killed, network lost). Needs --will-message.
    #[arg(long = "will-topic", value_name = "TOPIC", requires = "will_message")]
    pub will_topic: Option<String>,

    /// Payload of the will. Needs --will-topic.
    #[arg(long = "will-message", value_name = "MESSAGE", requires = "will_topic")]
    pub will_message: Option<OsString>,

    /// QoS of the will (0, 1 or 2). Default 0.
    #[arg(long = "will-qos", value_name = "QOS", value_parser = parse_qos, requires = "will_topic")]
    pub will_qos: Option<QoS>,

    /// Publish the will as a retained message.
    #[arg(long = "will-retain", requires = "will_topic")]
    pub will_retain: bool,

    /// WebSocket (ws://, wss://): extra HTTP headers for the upgrade request, as a JSON object
    /// of names to values, e.g. '{"Authorization": "Bearer abc"}'. They add to (and for the
    /// same name replace) extra_headers of the config file. Ignored, with a warning, for other
    /// URLs.
    #[arg(long = "extra-headers", value_name = "JSON", value_parser = parse_extra_headers)]
    pub extra_headers: Option<Headers>,

    /// Log at debug level to stderr (RUST_LOG, e.g. RUST_LOG=amqtt_client=trace, overrides it).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
}

impl ConnectionArgs {
    /// The client configuration: the config file (or aMQTT's defaults) with the flags applied.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = match &self.config_file {
            Some(path) => ClientConfig::load(path)?,
            None => ClientConfig::default(),
        };
        if let Some(keep_alive) = self.keep_alive {
            config.keep_alive = keep_alive;
        }
        if self.clean_session {
            config.cleansession = true;
        }
        let connection = &mut config.connection;
        connection.cafile = self.ca_file.clone().or(connection.cafile.take());
        connection.capath = self.ca_path.clone().or(connection.capath.take());
        connection.cadata = self.ca_data.clone().or(connection.cadata.take());
        if self.cert_file.is_some() {
            connection.certfile = self.cert_file.clone();
            connection.keyfile = self.key_file.clone();
        }
        if self.insecure {
            config.check_hostname = false;
        }
        if let Some(Headers(headers)) = &self.extra_headers {
            for (name, value) in headers {
                config.extra_headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
                config.extra_headers.push((name.clone(), value.clone()));
            }
        }
        if let (Some(topic), Some(message)) = (&self.will_topic, &self.will_message) {
            amqtt_protocol::validate_topic_name(topic)
                .map_err(|error| anyhow::anyhow!("invalid --will-topic {topic:?}: {error}"))?;
            config.will = Some(WillConfig {
                topic: topic.clone(),
                message: Bytes::from(message.clone().into_vec()),
                qos: self.will_qos.unwrap_or(QoS::AtMostOnce),
                retain: self.will_retain,
            });
        }
        Ok(config)
    }

    /// The broker URL: `--url`, else the config's `connection.uri`, else the default. Warns
    /// about `--extra-headers` when the URL is not a WebSocket one.
    pub fn broker_url(&self, config: &ClientConfig) -> String {
        let url = self.url.clone().or_else(|| config.connection.uri.clone()).unwrap_or_else(|| DEFAULT_URL.into());
        if self.extra_headers.is_some() {
            let websocket = parse_url(&url).is_ok_and(|url| matches!(url.scheme, Scheme::Ws | Scheme::Wss));
            if !websocket {
                warn_user("--extra-headers only applies to ws:// and wss:// URLs; ignored");
            }
        }
        url
    }

    /// `--client-id`, else `<program>/<pid>-<hostname>` as aMQTT makes it.
    pub fn client_id(&self) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("{}/{}-{}", program(), std::process::id(), hostname()))
    }
}

/// The value of `--extra-headers`: header names and values, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Headers(pub Vec<(String, String)>);

/// `--extra-headers`: a JSON object whose values are strings (numbers and booleans are taken as
/// their text), as aMQTT takes it. Parsed by the YAML parser, which reads JSON.
pub fn parse_extra_headers(json: &str) -> Result<Headers, String> {
    let expected = "expected a JSON object of header names to values, e.g. '{\"Authorization\": \"Bearer abc\"}'";
    let value: yaml_serde::Value = yaml_serde::from_str(json).map_err(|error| format!("{error}; {expected}"))?;
    let yaml_serde::Value::Mapping(map) = value else { return Err(expected.into()) };
    map.into_iter()
        .map(|(name, value)| {
            let yaml_serde::Value::String(name) = name else {
                return Err(format!("header names must be strings; {expected}"));
            };
            let value = match value {
                yaml_serde::Value::String(value) => value,
                yaml_serde::Value::Number(number) => number.to_string(),
                yaml_serde::Value::Bool(b) => b.to_string(),
                _ => return Err(format!("the value of {name:?} must be a string")),
            };
            Ok((name, value))
        })
        .collect::<Result<_, _>>()
        .map(Headers)
}

/// A QoS flag value: 0, 1 or 2.
pub fn parse_qos(value: &str) -> Result<QoS, String> {
    value.parse::<u8>().ok().and_then(QoS::from_u8).ok_or_else(|| format!("QoS must be 0, 1 or 2, not {value:?}"))
}

/// The name of this command, for messages.
pub fn program() -> &'static str {
    env!("CARGO_BIN_NAME")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Parses the command line. Help and version go to stdout with status 0; a usage error is
/// printed with status 1 (clap's own default is 2, which these commands keep for connection
/// failures).
fn parse_args<A: Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|error| {
        let _ = error.print();
        if error.use_stderr() {
            ExitCode::from(EXIT_FAILURE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Logs to stderr: errors only, or everything at debug level with `-d`; RUST_LOG overrides.
fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "error" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// A runtime on this thread: the commands do one thing at a time, and a single thread keeps the
/// order in which publishes are handed to the client obvious.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// What both commands' `main` does: parse the flags, set up logging, run `run` on a
/// single-threaded runtime and turn its error into a message and an exit status.
pub fn main<A, F, Fut>(debug: impl Fn(&A) -> bool, run: F) -> ExitCode
where
    A: Parser,
    F: FnOnce(A) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let cli: A = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(debug(&cli));
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => return report(&error),
    };
    let result = runtime.block_on(run(cli));
    // Nothing of ours is left running; don't wait for anything that is.
    runtime.shutdown_background();
    result.unwrap_or_else(|error| report(&error))
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment this is made.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called inside the runtime.
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        let terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        Ok(Signals { interrupt, terminate })
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Prints a warning for the user on stderr.
pub fn warn_user(message: &str) {
    eprintln!("{}: warning: {message}", program());
}

/// Prints the error (with its causes) as `<program>: <message>` and returns its exit status.
pub fn report(error: &anyhow::Error) -> ExitCode {
    tracing::debug!(?error, "failed");
    eprintln!("{}: {}", program(), error_chain(error));
    ExitCode::from(exit_status(error))
}

/// [`EXIT_CONNECTION`] for a refused, unreachable or lost connection, else [`EXIT_FAILURE`].
pub fn exit_status(error: &anyhow::Error) -> u8 {
    let client_error = error.chain().find_map(|cause| cause.downcast_ref::<ClientError>());
    match client_error {
        Some(
            ClientError::Refused(_)
            | ClientError::Unreachable { .. }
            | ClientError::Disconnected
            | ClientError::Tls { .. }
            | ClientError::WebSocket { .. },
        ) => EXIT_CONNECTION,
        _ => EXIT_FAILURE,
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already includes (the client's errors print their source themselves).
fn error_chain(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_headers_are_a_json_object() {
        let headers = parse_extra_headers(r#"{"Authorization": "Bearer a\u0062c", "X-N": 7, "X-B": false}"#);
        let expected = [("Authorization", "Bearer abc"), ("X-N", "7"), ("X-B", "false")];
        assert_eq!(headers, Ok(Headers(expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())));
        assert_eq!(parse_extra_headers("{}"), Ok(Headers(Vec::new())));
        for bad in ["[1]", "\"text\"", "{\"a\": {\"b\": 1}}", "{\"a\": null}", "{not json"] {
            assert!(parse_extra_headers(bad).is_err(), "{bad} must be refused");
        }
    }
}
