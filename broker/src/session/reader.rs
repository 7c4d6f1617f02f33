//! Reads a client's byte stream and cuts it into whole MQTT packets.
//!
//! Each item is every complete packet that one read made available, as one `Bytes`: the session
//! decodes them all before it routes, so a burst of PUBLISH packets becomes one batch for the
//! router.
//!
//! Memory follows the traffic. A connection with nothing buffered waits for data with a small
//! stack buffer, so an idle client holds no read buffer at all. Once data flows, reads go into
//! a buffer whose size adapts: doubled while reads fill it (a busy publisher gets large batches
//! and few system calls), halved while they use little of it. A packet being read is never
//! buffered beyond the maximum packet size, which is checked from its fixed header first.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use amqtt_protocol::{frame_len, DecodeError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::stats;

/// Stack buffer for the first read after a quiet spell: most control packets and small
/// publishes fit, and nothing stays allocated while the client is silent.
const PROBE: usize = 512;
/// Bounds of the adaptive read size.
const MIN_READ: usize = 1024;
const MAX_READ: usize = 64 * 1024;

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

/// Whole packets at the start of the read buffer, counted for the broker's statistics on the
/// way (the walk over their headers is needed anyway).
#[derive(Debug, Default, Clone, Copy)]
struct Prefix {
    len: usize,
    packets: usize,
    publishes: usize,
}

pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    read_size: usize,
    max_packet_size: usize,
    done: bool,
    gate: Rc<ReadGate>,
}

impl<R> FrameReader<R> {
    pub fn new(io: R, max_packet_size: usize, gate: Rc<ReadGate>) -> Self {
        FrameReader { io, buf: BytesMut::new(), read_size: MIN_READ, max_packet_size, done: false, gate }
    }

    /// Adapts the next read size to how much the last read brought.
    fn record_read(&mut self, read: usize, room: usize) {
        if read == room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if read < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
    }

    /// The longest prefix of the buffer made of whole packets.
    fn complete_prefix(&self) -> Result<Prefix, DecodeError> {
        let mut prefix = Prefix::default();
        while let Some(len) = frame_len(&self.buf[prefix.len..], self.max_packet_size)? {
            // PUBLISH is packet type 3, in the high nibble of the first byte.
            prefix.publishes += usize::from(self.buf[prefix.len] >> 4 == 3);
            prefix.packets += 1;
            prefix.len += len;
        }
        Ok(prefix)
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
        // Whether the last read may have left more data in the socket.
        let mut more = false;
        loop {
            let complete = match this.complete_prefix() {
                Ok(complete) => complete,
                Err(error) => return this.fail(error.into()),
            };
            if complete.len > 0 && !more {
                stats::count_received(complete.len, complete.packets, complete.publishes);
                let frames = this.buf.split_to(complete.len).freeze();
                if this.buf.is_empty() {
                    // Let the allocation go with the frames, which the session drops once handled.
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Some(Ok(frames)));
            }
            let read = if this.buf.is_empty() {
                let mut probe = [0u8; PROBE];
                let mut probe = ReadBuf::new(&mut probe);
                if let Err(error) = ready!(Pin::new(&mut this.io).poll_read(cx, &mut probe)) {
                    return this.fail(error.into());
                }
                let filled = probe.filled();
                more = filled.len() == PROBE;
                // A short read is all there is: keep exactly that. A full one likely has more
                // behind it: make room for a real read.
                this.buf = BytesMut::with_capacity(if more { this.read_size } else { filled.len() });
                this.buf.extend_from_slice(filled);
                filled.len()
            } else {
                if this.buf.capacity() == this.buf.len() {
                    // Room for at least the partial packet again: geometric growth for packets
                    // larger than a read; frame_len has refused anything over the maximum.
                    this.buf.reserve(this.read_size.max(this.buf.len()));
                }
                let room = this.buf.capacity() - this.buf.len();
                match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                    Poll::Ready(Ok(read)) => {
                        this.record_read(read, room);
                        more = read == room;
                        if read == 0 {
                            more = false;
                        }
                        read
                    }
                    Poll::Ready(Err(error)) => return this.fail(error.into()),
                    // Nothing more for now: hand over what is complete, if anything.
                    Poll::Pending if more => {
                        more = false;
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            };
            if read == 0 {
                // End of stream; a partial packet left in the buffer is simply dropped.
                this.done = true;
                return Poll::Ready(None);
            }
        }
    }
}

impl<R> FrameReader<R> {
    fn fail(&mut self, error: ReadError) -> Poll<Option<Result<Bytes, ReadError>>> {
        self.done = true;
        Poll::Ready(Some(Err(error)))
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
