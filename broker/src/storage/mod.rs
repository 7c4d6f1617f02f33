//! Persistence: what the broker keeps across restarts and crashes (issue 8), and the small
//! trait a store implements.
//!
//! The broker describes every change of durable state as a [`Change`]: a retained message set
//! or cleared, a persistent session saved or removed, a queued or in-flight message saved or
//! removed, an incoming QoS 2 packet id added or removed. Changes go to the
//! [`StorageWriter`] thread, which commits them in groups to a [`Store`] (the redb file,
//! [`RedbStore`]), so many publishers share one fsync. At start-up [`Store::load`] returns
//! everything as one [`Snapshot`], restored before the listeners open.
//!
//! The data model here knows nothing of redb: a test or another backend implements [`Store`]
//! with the same types. Strings are [`ByteString`]s and payloads [`Bytes`], the types the
//! router already holds, so describing a change copies no topic and no payload.

mod codec;
mod fences;
mod redb_store;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use amqtt_protocol::{ByteString, QoS};
use bytes::Bytes;

pub use redb_store::RedbStore;
pub use writer::{StorageHandle, StorageWriter};

/// One change of durable state. A batch of changes is applied in order, all or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A retained message for `topic`, replacing the previous one.
    RetainedSet { topic: ByteString, qos: QoS, payload: Bytes },
    /// The retained message of `topic` is gone (an empty retained PUBLISH).
    RetainedCleared { topic: ByteString },
    /// A persistent (clean session 0) session is created or updated.
    SessionSaved { client_id: ByteString, record: SessionRecord },
    /// The session is gone (clean session 1 took over, or it expired): removes its record, all
    /// its messages and all its incoming packet ids. `superseded_by`: the registration (router
    /// generation) that took the client id over while the old session may still be running;
    /// whatever sessions of older generations submit for the client id afterwards is dropped
    /// (see `fences`).
    SessionRemoved { client_id: ByteString, superseded_by: Option<u64> },
    /// A message for the session, new (queued) or with a new state (sent, released). `seq`
    /// orders a session's messages; the broker picks it, increasing per session.
    MessageSaved { client_id: ByteString, seq: u64, message: StoredMessage },
    /// The message's flow is complete (PUBACK, PUBCOMP) or it was dropped.
    MessageRemoved { client_id: ByteString, seq: u64 },
    /// A QoS 2 PUBLISH with this packet id was received and acknowledged with PUBREC; the
    /// broker awaits its PUBREL and must not route a duplicate meanwhile.
    IncomingAdded { client_id: ByteString, pkid: u16 },
    /// The PUBREL for `pkid` arrived (PUBCOMP sent).
    IncomingRemoved { client_id: ByteString, pkid: u16 },
}

impl Change {
    /// The client id of a change to a session's messages or incoming packet ids.
    fn session_client_id(&self) -> Option<&ByteString> {
        match self {
            Change::MessageSaved { client_id, .. }
            | Change::MessageRemoved { client_id, .. }
            | Change::IncomingAdded { client_id, .. }
            | Change::IncomingRemoved { client_id, .. } => Some(client_id),
            Change::RetainedSet { .. }
            | Change::RetainedCleared { .. }
            | Change::SessionSaved { .. }
            | Change::SessionRemoved { .. } => None,
        }
    }
}

/// What a persistent session keeps besides its messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecord {
    /// Topic filters with their granted QoS, in subscription order.
    pub subscriptions: Vec<(ByteString, QoS)>,
    /// When the client disconnected (Unix seconds); None while it is connected. With
    /// `session_expiry_interval`, the session is removed that long after this.
    pub disconnected_at: Option<u64>,
}

/// A message held for a session: queued, or in flight toward the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub state: MessageState,
    pub qos: QoS,
    pub retain: bool,
    pub topic: ByteString,
    pub payload: Bytes,
}

/// Where a stored message is in its outgoing QoS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Not sent yet (the client is offline or its in-flight window is full).
    Queued,
    /// PUBLISH sent with `pkid`, not acknowledged yet: resent with DUP after a restart.
    Sent { pkid: u16 },
    /// QoS 2: PUBREC received, PUBREL sent with `pkid`: only the PUBREL is resent.
    Released { pkid: u16 },
}

/// Everything a store holds, as [`Store::load`] returns it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Retained messages: (topic, qos, payload), in topic order.
    pub retained: Vec<(ByteString, QoS, Bytes)>,
    /// Persistent sessions, in client id order.
    pub sessions: Vec<StoredSession>,
}

/// One persistent session with its messages and incoming QoS 2 packet ids.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredSession {
    pub client_id: ByteString,
    pub record: SessionRecord,
    /// (seq, message), in seq order.
    pub messages: Vec<(u64, StoredMessage)>,
    /// Packet ids of QoS 2 PUBLISHes awaiting their PUBREL, ascending.
    pub incoming: Vec<u16>,
}

/// A place where the broker's durable state lives.
///
/// Implementations are blocking; the [`StorageWriter`] calls them on a thread of its own,
/// never on an actor's thread.
pub trait Store: Send {
    /// Applies `changes` in order in one transaction: all of them or none. With `durable`, the
    /// changes are on disk when this returns; without, they are visible to [`Store::load`] but
    /// become durable only with the next durable `apply` or [`Store::sync`] (a crash before
    /// that loses them, never anything older).
    fn apply(&mut self, changes: &[Change], durable: bool) -> Result<(), StoreError>;

    /// Everything stored. Messages and incoming packet ids of a client without a session
    /// record are left out (with a warning): no session could ever deliver them.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Makes every change applied so far durable.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// What can go wrong with the persistence store. Each message names the file and says what to
/// do. Cloneable, so that one failed commit can be reported to every waiter of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the persistence store {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "the persistence store {path} is corrupt: {detail}; move the file away to start empty, or restore a backup"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the persistence store {path} has format version {found}, but this broker reads version {expected}; {}",
        version_hint(*.found, *.expected)
    )]
    IncompatibleVersion { path: PathBuf, found: u32, expected: u32 },
    #[error("I/O error on the persistence store {path}: {source} (check free disk space and permissions)")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Any other failure of the database (a value too large, an earlier I/O error that needs a
    /// reopen, ...).
    #[error("the persistence store {path} failed: {reason}")]
    Database { path: PathBuf, reason: String },
    #[error("the storage writer has stopped (the broker is shutting down, or the writer failed; see the log)")]
    Stopped,
}

fn version_hint(found: u32, expected: u32) -> &'static str {
    if found > expected {
        "it was written by a newer amqtt: run that version, or move the file away to start empty"
    } else {
        "it was written by an older amqtt that this one cannot convert: run that version, \
         or move the file away to start empty"
    }
}
