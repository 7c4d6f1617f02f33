//! Reads a client's byte stream and cuts it into whole MQTT packets.
//!
//! Each item is every complete packet that one read made available, as one `Bytes`: the session
//! decodes them all before it routes, so a burst of PUBLISH packets becomes one batch for the
//! router. The buffer starts small and grows with the packet being read (never beyond the
//! maximum packet size, which is checked from the fixed header before the body is buffered),
//! and a large buffer is released once it is drained, so an idle connection holds little memory.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use amqtt_protocol::{frame_len, DecodeError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncRead;
use tokio_util::io::poll_read_buf;

/// The smallest read: enough for most control packets and small publishes.
const MIN_READ: usize = 256;
/// A drained buffer larger than this is given back instead of being kept for the next packet.
const KEEP_CAPACITY: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("malformed packet: {0}")]
    Malformed(#[from] DecodeError),
}

/// Lets a session stop taking input from its client for a while without tearing the stream
/// down: how a publisher is slowed while its subscribers cannot keep up (back-pressure). TCP
/// flow control then slows the client itself.
#[derive(Default)]
pub struct ReadGate {
    paused: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl ReadGate {
    pub fn pause(&self) {
        self.paused.set(true);
    }

    pub fn resume(&self) {
        self.paused.set(false);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.get()
    }
}

pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_packet_size: usize,
    done: bool,
    gate: Rc<ReadGate>,
}

impl<R> FrameReader<R> {
    pub fn new(io: R, max_packet_size: usize, gate: Rc<ReadGate>) -> Self {
        FrameReader { io, buf: BytesMut::new(), max_packet_size, done: false, gate }
    }

    /// Length of the longest prefix of the buffer made of whole packets.
    fn complete_prefix(&self) -> Result<usize, DecodeError> {
        let mut end = 0;
        while let Some(len) = frame_len(&self.buf[end..], self.max_packet_size)? {
            end += len;
        }
        Ok(end)
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Bytes, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.gate.is_paused() {
            this.gate.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        loop {
            let complete = match this.complete_prefix() {
                Ok(complete) => complete,
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            };
            if complete > 0 {
                let frames = this.buf.split_to(complete).freeze();
                if this.buf.is_empty() && this.buf.capacity() > KEEP_CAPACITY {
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Some(Ok(frames)));
            }
            // Grow geometrically while a large packet arrives; frame_len has already refused
            // anything over the maximum packet size.
            if this.buf.capacity() == this.buf.len() {
                this.buf.reserve(this.buf.len().max(MIN_READ));
            }
            match ready!(poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf)) {
                Ok(0) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn yields_all_complete_packets_of_a_read_at_once() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server, 1024, Rc::default());
        // Two PINGREQs and the first byte of a third.
        client.write_all(&[0xC0, 0x00, 0xC0, 0x00, 0xC0]).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), Bytes::from_static(&[0xC0, 0, 0xC0, 0]));
        client.write_all(&[0x00]).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), Bytes::from_static(&[0xC0, 0]));
        drop(client);
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn refuses_an_oversized_packet_from_its_header() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server, 100, Rc::default());
        // PUBLISH announcing 200 bytes: refused before any body byte is sent.
        client.write_all(&[0x30, 0xC8, 0x01]).await.unwrap();
        assert!(matches!(reader.next().await, Some(Err(ReadError::Malformed(_)))));
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn a_paused_gate_holds_back_even_buffered_packets() {
        let (mut client, server) = tokio::io::duplex(64);
        let gate = Rc::new(ReadGate::default());
        let mut reader = FrameReader::new(server, 1024, gate.clone());
        gate.pause();
        client.write_all(&[0xC0, 0x00]).await.unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(waiting.is_err(), "nothing is read while paused");
        gate.resume();
        assert_eq!(reader.next().await.unwrap().unwrap(), Bytes::from_static(&[0xC0, 0]));
    }
}
