//! MQTT over WebSocket (`ws://`, `wss://`): the upgrade request (subprotocol `mqtt`, the
//! URL's path, `extra_headers`) and [`WsStream`], which shows the driver a byte stream like
//! TCP.
//!
//! MQTT over WebSocket sends MQTT bytes in binary frames with no alignment to packets
//! [MQTT-6.0.0-1, -2]: a packet may span frames and a frame may hold several packets. So
//! reading hands out the frames' bytes in order, and writing gathers bytes until a flush,
//! which sends them as one frame (the driver flushes after each batch of packets).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use amqtt_protocol::MAX_REMAINING_LENGTH;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::ConnectError;
use crate::url::BrokerUrl;
use crate::ClientError;

/// The subprotocol of MQTT 3.1.1 over WebSocket [MQTT-6.0.0-3].
const SUBPROTOCOL: &str = "mqtt";
/// Bytes gathered before a frame is sent without waiting for the flush, so that a writer that
/// never flushes cannot grow the buffer without bound.
const FRAME_TARGET: usize = 64 * 1024;
/// The largest frame and message accepted from the broker: the largest MQTT packet, as the
/// TCP codec accepts.
const MAX_MESSAGE: usize = MAX_REMAINING_LENGTH + 5;

/// The upgrade request of one broker URL, checked once per `connect()`.
pub(crate) struct Upgrade {
    /// `ws://host:port/path`: what tungstenite makes the request line and Host header of.
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The URL without credentials, for messages.
    endpoint: String,
}

impl Upgrade {
    pub(crate) fn new(
        authority: &str,
        broker: &BrokerUrl,
        extra_headers: &[(String, String)],
        endpoint: &str,
    ) -> Result<Upgrade, ClientError> {
        // The scheme only tells tungstenite the default port; TLS, if any, is already done.
        let uri = format!("ws://{authority}{}", broker.path);
        let invalid = |reason: String| ClientError::Config { path: "extra_headers".into(), reason };
        let headers = extra_headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(format!("{name:?} is not a valid HTTP header name")))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| invalid(format!("the value of {name} is not a valid HTTP header value")))?;
                Ok((name, value))
            })
            .collect::<Result<_, ClientError>>()?;
        let upgrade = Upgrade { uri, headers, endpoint: endpoint.to_string() };
        // The request is built for each connection (a fresh key each time); check it once now.
        upgrade
            .request()
            .map_err(|error| ClientError::InvalidUrl { url: endpoint.to_string(), reason: error.to_string() })?;
        Ok(upgrade)
    }

    fn request(&self) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, WsError> {
        let mut request = self.uri.as_str().into_client_request()?;
        let headers = request.headers_mut();
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        // A header given by the user replaces a generated one (Host, say).
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    /// Upgrades `stream` (TCP or TLS) to a WebSocket carrying MQTT.
    pub(crate) async fn handshake<S>(&self, stream: S) -> Result<WsStream<S>, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let fatal = |reason: String| ConnectError::Fatal(ClientError::WebSocket { url: self.endpoint.clone(), reason });
        let request = self.request().map_err(|error| fatal(error.to_string()))?;
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, response)) => {
                debug!(
                    endpoint = %self.endpoint,
                    subprotocol = ?response.headers().get(SEC_WEBSOCKET_PROTOCOL),
                    "WebSocket open"
                );
                Ok(WsStream { ws, read: Bytes::new(), write: BytesMut::new() })
            }
            // What an MQTT listener that is not a WebSocket one does with an HTTP request.
            Err(WsError::Io(error))
                if matches!(error.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) =>
            {
                Err(ConnectError::Retry(io::Error::new(
                    error.kind(),
                    format!(
                        "the broker closed the connection during the WebSocket handshake ({error}): is this port a \
                         WebSocket listener? (mqtt:// and mqtts:// connect without WebSocket)"
                    ),
                )))
            }
            Err(WsError::Io(error)) => Err(ConnectError::Retry(error)),
            Err(WsError::Http(response)) => Err(fatal(format!(
                "the server answered HTTP {} instead of switching to WebSocket: check the path in the URL (e.g. \
                 ws://host:8080/mqtt) and that this port is a WebSocket listener",
                response.status()
            ))),
            Err(WsError::Protocol(error)) => {
                Err(fatal(format!("{error} (is this port a WebSocket listener that speaks MQTT?)")))
            }
            Err(error) => Err(fatal(error.to_string())),
        }
    }
}

/// A WebSocket seen as a byte stream: binary frames in, one binary frame out per flush.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary frame received.
    read: Bytes,
    /// What was written since the last frame was sent.
    write: BytesMut,
}

fn io_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Hands what was written to the WebSocket as one binary frame (not flushed yet).
    fn poll_send_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        let frame = self.write.split().freeze();
        Poll::Ready(Pin::new(&mut self.ws).start_send(Message::Binary(frame)).map_err(io_error))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.remaining());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Pings are answered by tungstenite itself while reading.
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.read = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the broker sent a text frame: MQTT over WebSocket uses binary frames only",
                    )))
                }
                // End of stream, as a TCP close.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.len() >= FRAME_TARGET {
            ready!(this.poll_send_frame(cx))?;
        }
        this.write.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frame(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(io_error)
    }

    /// Sends what is left, then a Close frame.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_frame(cx))?;
        Pin::new(&mut this.ws).poll_close(cx).map_err(io_error)
    }
}
