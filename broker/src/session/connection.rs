//! The socket side of a session: the write buffer and its flushing, the read stream's handle,
//! and the listener slot the connection occupies.
//!
//! Packets are encoded into one buffer while the actor handles a wake-up's worth of work; one
//! write drains it afterwards, so a burst of deliveries costs one system call, not one per
//! packet. While a write is in progress new packets accumulate in a fresh buffer.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{AsyncContext, Context, SpawnHandle};
use amqtt_protocol::Packet;
use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::error;

use super::reader::ReadGate;
use super::Session;
use crate::stats::{self, Stats};

pub type BoxedWriter = Box<dyn AsyncWrite + Unpin>;

/// A drained buffer up to this size is kept for the next write instead of being freed.
const KEEP_CAPACITY: usize = 8 * 1024;

/// One place in a listener's `max-connections` budget, given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<AtomicUsize>);

impl ConnectionPermit {
    pub fn new(active: Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        ConnectionPermit(active)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The outcome of one write: the writer and buffer come back to be reused.
pub struct FlushDone {
    writer: BoxedWriter,
    buf: BytesMut,
    result: io::Result<()>,
}

/// Where a connection is in the broker's graceful shutdown (see `session::drain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Serving as usual.
    No,
    /// Writing out what is queued for the client, taking nothing new from it.
    Flushing,
    /// Everything written and the write side shut down: reading until the client closes.
    Lingering,
}

pub struct Connection {
    writer: Option<BoxedWriter>,
    buf: BytesMut,
    reader: SpawnHandle,
    /// Pauses the reader while this client's messages cannot be delivered fast enough.
    pub gate: Rc<ReadGate>,
    closing: bool,
    counted_as_connected: bool,
    /// One byte, in the struct's padding: draining costs an idle connection nothing.
    drain: Drain,
    _permit: ConnectionPermit,
}

impl Connection {
    pub fn new(writer: BoxedWriter, reader: SpawnHandle, gate: Rc<ReadGate>, permit: ConnectionPermit) -> Self {
        Connection {
            writer: Some(writer),
            buf: BytesMut::new(),
            reader,
            gate,
            closing: false,
            counted_as_connected: false,
            drain: Drain::No,
            _permit: permit,
        }
    }

    pub fn write(&mut self, packet: &Packet) {
        let before = self.buf.len();
        match packet.write(&mut self.buf) {
            // Tallied on this thread; the session adds it to the shared counters when it flushes.
            Ok(()) => stats::count_sent(self.buf.len() - before, matches!(packet, Packet::Publish(_))),
            // Everything written was decoded or built within protocol limits; this is a bug.
            Err(error) => error!(%error, packet = %packet.packet_type(), "cannot encode packet; not sent"),
        }
    }

    /// Bytes waiting to be written, including those of a write in progress.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Starts writing the buffer out unless a write is already running or there is nothing to
    /// write.
    pub fn start_flush(&mut self) -> Option<impl Future<Output = FlushDone> + 'static> {
        if self.buf.is_empty() {
            return None;
        }
        let mut writer = self.writer.take()?;
        let mut buf = std::mem::take(&mut self.buf);
        Some(async move {
            let mut result = writer.write_all_buf(&mut buf).await;
            if result.is_ok() {
                result = writer.flush().await;
            }
            FlushDone { writer, buf, result }
        })
    }

    /// Takes back the writer after a write. Returns Ok(true) when the connection was waiting
    /// for this write to close.
    pub fn finish_flush(&mut self, done: FlushDone) -> io::Result<bool> {
        let FlushDone { writer, mut buf, result } = done;
        result?;
        self.writer = Some(writer);
        if self.buf.is_empty() && buf.capacity() <= KEEP_CAPACITY {
            buf.clear();
            self.buf = buf;
        }
        Ok(self.closing && self.buf.is_empty())
    }

    /// Stops reading at once and asks for the connection to close once what is buffered has
    /// been written. Returns false when there is nothing left to write, so it can close at once.
    pub fn close_after_flush(&mut self, ctx: &mut Context<Session>) -> bool {
        self.closing = true;
        ctx.cancel_future(self.reader);
        !self.buf.is_empty() || self.writer.is_none()
    }

    /// Whether the connection only waits for its last write before closing.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn drain(&self) -> Drain {
        self.drain
    }

    /// The broker is shutting down: from now on the session only writes out what it has.
    pub fn start_draining(&mut self) {
        if self.drain == Drain::No {
            self.drain = Drain::Flushing;
        }
    }

    /// Once a draining connection has written everything: shuts its write side down (a FIN, a
    /// TLS close_notify, a WebSocket close frame) and returns the future that does it; the
    /// reader goes on. None while something is still buffered or being written.
    pub fn shut_write(&mut self) -> Option<impl Future<Output = ()> + 'static> {
        if self.drain != Drain::Flushing || !self.buf.is_empty() {
            return None;
        }
        let mut writer = self.writer.take()?;
        self.drain = Drain::Lingering;
        Some(async move {
            let _ = writer.shutdown().await;
        })
    }

    pub fn mark_connected(&mut self, stats: &Stats) {
        if !self.counted_as_connected {
            self.counted_as_connected = true;
            stats.client_connected();
        }
    }

    /// Stops reading and drops both halves of the socket, which closes it.
    pub fn shutdown(self, ctx: &mut Context<Session>, stats: &Stats) {
        ctx.cancel_future(self.reader);
        if self.counted_as_connected {
            stats.client_disconnected();
        }
        // What this connection's last wake-ups tallied is counted before it goes.
        stats.publish_local();
    }
}
