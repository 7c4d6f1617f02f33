//! What can go wrong, worded for the person running the program: each message says what
//! happened and, where there is one, what to do about it.

use amqtt_protocol::ConnectReturnCode;

/// An error of the client API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered CONNACK with a refusal. Not retried: the same CONNECT would be refused
    /// again. The message is the code in words, e.g. "connection refused: not authorized".
    #[error("{0}")]
    Refused(ConnectReturnCode),
    /// No MQTT connection could be made (TCP refused or timed out, or the peer closed before its
    /// CONNACK), even after the configured retries.
    #[error("cannot reach {url} after {attempts} attempts: {source} (is the broker running and the address right?)")]
    Unreachable { url: String, attempts: u32, source: std::io::Error },
    /// The broker URL does not follow `[mqtt|ws][s]://[user][:password]@host[:port]`.
    #[error("invalid broker URL {url:?}: {reason} (expected [mqtt|ws][s]://[user][:password]@host[:port])")]
    InvalidUrl { url: String, reason: String },
    /// TLS could not be set up before connecting: a CA, certificate or key file (or `cadata`)
    /// is missing, unreadable or holds no usable PEM data. `source_name` names the file or the
    /// setting; not retried.
    #[error("{source_name}: {reason}")]
    TlsSetup { source_name: String, reason: String },
    /// The TLS handshake failed in a way another attempt cannot fix: the broker's certificate
    /// is not trusted, not valid for the host or expired, or the broker refused ours. The reason
    /// says what to change. Not retried.
    #[error("TLS connection to {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// The server did not accept the WebSocket upgrade (an HTTP error status, or no `mqtt`
    /// subprotocol). Not retried.
    #[error("WebSocket connection to {url} failed: {reason}")]
    WebSocket { url: String, reason: String },
    /// The call needs a connection: `connect` was not called, or `disconnect` was.
    #[error("not connected: call connect() first")]
    NotConnected,
    /// `deliver_message` waited for its whole timeout without a message.
    #[error("timed out")]
    Timeout,
    /// The connection was lost for good (auto-reconnect off or out of retries) or closed by
    /// `disconnect` while the call was waiting.
    #[error("disconnected from the broker")]
    Disconnected,
    /// The broker broke the MQTT protocol, or the request cannot be expressed in it (an invalid
    /// topic, say).
    #[error("{0}")]
    Protocol(String),
    /// A configuration file could not be read or has an invalid value.
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
