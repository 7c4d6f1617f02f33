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
    /// A scheme this build cannot connect with yet (TLS and WebSocket transports).
    #[error("{scheme}:// is not supported yet (use mqtt://)")]
    NotSupportedYet { scheme: String },
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
