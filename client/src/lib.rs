//! amqtt-rs MQTT 3.1.1 client: the Rust counterpart of aMQTT's `MQTTClient`.
//!
//! - [`MqttClient`]: `connect(url)`, `publish`, `subscribe`, `unsubscribe`,
//!   `deliver_message(timeout)`, `disconnect`, with aMQTT's semantics: a publish completes when
//!   its QoS flow completes, many may be in flight at once, and the client reconnects by itself
//!   and restores its subscriptions (see [`MqttClient`]).
//! - [`ClientConfig`]: aMQTT's client settings and defaults, also loaded from aMQTT's client
//!   YAML ([`ClientConfig::load`]).
//! - [`parse_url`]: `[mqtt|ws][s]://[user][:password]@host[:port][/path]`: MQTT over TCP,
//!   TLS (`mqtts://`, mutual TLS with a client certificate), WebSocket (`ws://`) and WebSocket
//!   over TLS (`wss://`), with the same behaviour (reconnection included) on each.
//!
//! Internally each connected client is one tokio task (the connection driver) that owns the
//! socket and the session state; the handles send it commands. See DESIGN.md, section Client.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

mod client;
mod config;
mod driver;
mod error;
mod session;
mod transport;
mod url;

pub use amqtt_protocol::{ConnectReturnCode, QoS, SubscribeReturnCode};
pub use client::MqttClient;
pub use config::{ClientConfig, ConnectionConfig, TopicConfig, WillConfig};
pub use error::ClientError;
pub use url::{parse_url, BrokerUrl, Scheme};

/// An application message: one received by [`MqttClient::deliver_message`], or one sent, as
/// returned by [`MqttClient::publish`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Set on a message sent again after a reconnection: by the broker for a received one (it
    /// may have been delivered before), by this client for a published one.
    pub dup: bool,
}
