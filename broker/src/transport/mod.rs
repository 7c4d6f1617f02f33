//! Transports other than plain TCP (TLS, WebSocket): what turns an accepted connection into the
//! byte stream a session speaks MQTT over (`Session::start_on`), and what the transport learned
//! about the client on the way (a verified TLS client certificate).
//!
//! Plain TCP does not go through here: its sockets go straight to the session, with no boxing
//! and no extra hop.

pub(crate) mod tls;
pub(crate) mod websocket;

pub use tls::TlsSetupError;
