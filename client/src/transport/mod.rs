//! The byte stream under MQTT: TCP (`mqtt://`), TLS (`mqtts://`), WebSocket (`ws://`) or
//! WebSocket over TLS (`wss://`). The driver reads and writes MQTT bytes the same way on each;
//! only opening the stream differs, and that is all this module does.
//!
//! A [`Connector`] is prepared once per `connect()`: certificates are loaded and the WebSocket
//! request is checked then, so a bad file or header fails at once instead of being retried, and
//! every reconnection reuses it.
//!
//! TCP stays unboxed ([`Transport::Tcp`]): its path through the driver is the one it always
//! had. TLS and WebSocket streams are boxed behind one trait object, so the driver is compiled
//! for two stream types only.

mod tls;
mod websocket;

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::warn;

use crate::url::BrokerUrl;
use crate::{ClientConfig, ClientError};

/// A stream the driver can run MQTT over.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized> ByteStream for T {}

/// An open connection to the broker, below MQTT.
pub(crate) enum Transport {
    Tcp(TcpStream),
    /// TLS, WebSocket or both. Writes may sit in the stream until flushed (a TLS record, a
    /// WebSocket frame): the driver flushes after each write.
    Layered(Box<dyn ByteStream>),
}

/// Why no stream could be opened.
pub(crate) enum ConnectError {
    /// Worth another attempt (refused, timed out, reset).
    Retry(io::Error),
    /// Another attempt would fail the same way (an untrusted certificate, an HTTP 404).
    Fatal(ClientError),
}

impl From<io::Error> for ConnectError {
    fn from(error: io::Error) -> Self {
        ConnectError::Retry(error)
    }
}

/// How to open a stream to one broker URL.
pub(crate) struct Connector {
    host: String,
    port: u16,
    /// `scheme://host:port/path`, for messages: the URL without its credentials.
    endpoint: String,
    tls: Option<tls::TlsSetup>,
    websocket: Option<websocket::Upgrade>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .field("websocket", &self.websocket.is_some())
            .finish()
    }
}

impl Connector {
    /// Prepares connections to `broker`: loads the TLS material for `mqtts://` and `wss://`,
    /// builds the WebSocket request for `ws://` and `wss://`.
    pub(crate) fn new(broker: &BrokerUrl, config: &ClientConfig) -> Result<Connector, ClientError> {
        let host = match broker.host.contains(':') {
            true => format!("[{}]", broker.host),
            false => broker.host.clone(),
        };
        let authority = format!("{host}:{}", broker.port);
        let endpoint = match broker.scheme.is_websocket() {
            true => format!("{}://{authority}{}", broker.scheme, broker.path),
            false => format!("{}://{authority}", broker.scheme),
        };
        let tls = match broker.scheme.is_tls() {
            true => Some(tls::TlsSetup::new(&broker.host, config, &endpoint)?),
            false => None,
        };
        let websocket = match broker.scheme.is_websocket() {
            true => Some(websocket::Upgrade::new(&authority, broker, &config.extra_headers, &endpoint)?),
            false => None,
        };
        Ok(Connector { host: broker.host.clone(), port: broker.port, endpoint, tls, websocket })
    }

    /// Opens a stream: TCP within `connect_timeout` (the system's own timeout when `None`), then
    /// the TLS and WebSocket handshakes, together within `handshake_timeout`.
    pub(crate) async fn connect(
        &self,
        connect_timeout: Option<Duration>,
        handshake_timeout: Duration,
    ) -> Result<Transport, ConnectError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port));
        let tcp = match connect_timeout {
            Some(limit) => tokio::time::timeout(limit, tcp).await.map_err(|_| timed_out("TCP connect"))?,
            None => tcp.await,
        }?;
        // MQTT packets are small and latency matters more than segment count; the driver
        // batches its writes itself.
        tcp.set_nodelay(true)?;
        if self.tls.is_none() && self.websocket.is_none() {
            return Ok(Transport::Tcp(tcp));
        }
        let handshakes = async {
            let stream: Box<dyn ByteStream> = match (&self.tls, &self.websocket) {
                (Some(tls), None) => Box::new(tls.handshake(tcp).await?),
                (None, Some(websocket)) => Box::new(websocket.handshake(tcp).await?),
                (Some(tls), Some(websocket)) => Box::new(websocket.handshake(tls.handshake(tcp).await?).await?),
                (None, None) => unreachable!("plain TCP returned above"),
            };
            Ok::<_, ConnectError>(stream)
        };
        let stream = tokio::time::timeout(handshake_timeout, handshakes)
            .await
            .map_err(|_| {
                timed_out(match self.tls {
                    Some(_) if self.websocket.is_some() => "the TLS and WebSocket handshakes",
                    Some(_) => "the TLS handshake",
                    None => "the WebSocket handshake",
                })
            })?
            .map_err(|error| match error {
                ConnectError::Retry(error) => self.classify(error),
                fatal => fatal,
            })?;
        if self.tls.as_ref().is_some_and(|tls| !tls.verifies()) {
            warn!(
                endpoint = %self.endpoint,
                "verify_cert is off: this connection is encrypted but the broker's identity is not checked"
            );
        }
        Ok(Transport::Layered(stream))
    }

    /// Turns an I/O error met after the handshakes (writing CONNECT, reading CONNACK) into one
    /// that says what to do, when it is a TLS failure: with TLS 1.3 the broker refuses a client
    /// certificate (or the lack of one) only after the client finished its handshake.
    pub(crate) fn classify(&self, error: io::Error) -> ConnectError {
        match tls::explain(&error, &self.host) {
            Some(reason) => ConnectError::Fatal(ClientError::Tls { url: self.endpoint.clone(), reason }),
            None => ConnectError::Retry(error),
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Layered(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Layered(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Layered(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Layered(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
