//! The redb file behind [`Store`]: crash-safe transactions in one file, pure Rust.
//!
//! Tables (their names and key/value types are part of the file format; changing any of them
//! means a new [`FORMAT_VERSION`]):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | `u32` (`format-version` → [`FORMAT_VERSION`]) |
//! | `retained` | topic | [`codec`] retained message |
//! | `sessions` | client id | [`codec`] session record |
//! | `messages` | (client id, seq) | [`codec`] message |
//! | `incoming` | (client id, packet id) | `()` |
//!
//! A file from another format version, a file that is not a redb database and a value that
//! does not decode are errors that name the file and say what to do; nothing here panics on
//! what it reads. A file that is not a redb database is left untouched; a redb file that fails
//! the checks keeps all its data (redb may still update its own bookkeeping when it opens and
//! closes the file).

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amqtt_protocol::ByteString;
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec::{self, DecodeError};
use super::{Change, Snapshot, Store, StoreError, StoredSession};

/// Version of the layout described above, kept in `meta`. Bump it (and convert, or refuse,
/// older files) when a table or a key type changes.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_KEY: &str = "format-version";

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const INCOMING: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming");

/// The first bytes of every redb file (redb's file format, stable across its versions).
const REDB_SIGNATURE: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// redb's page cache. Its default (1 GiB) is sized for a database server; ours holds sessions
/// and retained messages that are read once at start-up, and written, not read, afterwards.
const CACHE_SIZE: usize = 32 * 1024 * 1024;

/// Free space in the file below which it is not compacted at start.
const MIN_COMPACTION_GAIN: u64 = 1024 * 1024;

/// A [`Store`] in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens the store at `path`, creating it (and its tables) when the file does not exist or
    /// is empty. Fails, keeping the file's data, when it is not a redb database, when it holds
    /// another format version, or when another process has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let existing = check_signature(&path)?;
        let db = Database::builder().set_cache_size(CACHE_SIZE).create(&path).map_err(|err| open_error(&path, err))?;
        let mut store = RedbStore { db, path };
        store.check_format()?;
        if existing {
            store.compact()?;
        }
        Ok(store)
    }

    /// redb reuses the pages it frees but never gives them back, so the file stays as large as
    /// the largest backlog it ever held (messages piling up for clients that were away, say).
    /// Compaction needs the database to itself, as it is here before anything reads or writes
    /// it, so the space goes back at start; only when at least half the file is free, since
    /// compacting costs about a second per 100 MB still in use.
    fn compact(&mut self) -> Result<(), StoreError> {
        let before = file_len(&self.path);
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let stats = txn.stats().map_err(|e| self.error(e))?;
        txn.abort().map_err(|e| self.error(e))?;
        let in_use = stats.allocated_pages() * stats.page_size() as u64;
        if before.saturating_sub(in_use) < in_use.max(MIN_COMPACTION_GAIN) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let compacted = self.db.compact().map_err(|e| self.error(e))?;
        let after = file_len(&self.path);
        if compacted && after < before {
            tracing::info!(
                path = %self.path.display(),
                before_bytes = before,
                after_bytes = after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "persistence store compacted"
            );
        }
        Ok(())
    }

    /// Checks the format version, or writes it into a new file; creates the tables.
    fn check_format(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let tables: Vec<String> = txn
                .list_tables()
                .map_err(|e| self.error(e))?
                .map(|t| redb::TableHandle::name(&t).to_string())
                .collect();
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            let found = meta.get(FORMAT_KEY).map_err(|e| self.error(e))?.map(|v| v.value());
            match found {
                Some(FORMAT_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::IncompatibleVersion {
                        path: self.path.clone(),
                        found,
                        expected: FORMAT_VERSION,
                    })
                }
                None if tables.is_empty() => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION).map_err(|e| self.error(e))?;
                }
                None => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        detail: format!(
                            "it has tables ({}) but no format version, so it was not written by amqtt",
                            tables.join(", ")
                        ),
                    })
                }
            }
            txn.open_table(RETAINED).map_err(|e| self.error(e))?;
            txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
            txn.open_table(MESSAGES).map_err(|e| self.error(e))?;
            txn.open_table(INCOMING).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }

    fn error(&self, err: impl Into<redb::Error>) -> StoreError {
        let path = self.path.clone();
        match err.into() {
            redb::Error::Corrupted(detail) => StoreError::Corrupt { path, detail },
            err @ (redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. }) => {
                StoreError::Corrupt { path, detail: format!("{err} (the file was not written by this amqtt)") }
            }
            redb::Error::Io(source) => StoreError::Io { path, source: Arc::new(source) },
            other => StoreError::Database { path, reason: other.to_string() },
        }
    }

    fn corrupt(&self, table: &str, key: impl std::fmt::Debug, err: DecodeError) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), detail: format!("table {table}, key {key:?}: {err}") }
    }
}

impl Store for RedbStore {
    fn apply(&mut self, changes: &[Change], durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.error(e))?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
            .map_err(|e| self.error(e))?;
        {
            let mut retained = txn.open_table(RETAINED).map_err(|e| self.error(e))?;
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
            let mut messages = txn.open_table(MESSAGES).map_err(|e| self.error(e))?;
            let mut incoming = txn.open_table(INCOMING).map_err(|e| self.error(e))?;
            for change in changes {
                let done = match change {
                    Change::RetainedSet { topic, qos, payload } => {
                        retained.insert(&**topic, codec::encode_retained(*qos, payload).as_slice()).map(drop)
                    }
                    Change::RetainedCleared { topic } => retained.remove(&**topic).map(drop),
                    Change::SessionSaved { client_id, record } => {
                        sessions.insert(&**client_id, codec::encode_session(record).as_slice()).map(drop)
                    }
                    Change::SessionRemoved { client_id, .. } => {
                        let id: &str = client_id;
                        sessions
                            .remove(id)
                            .and_then(|_| messages.retain_in((id, 0)..=(id, u64::MAX), |_, _| false))
                            .and_then(|()| incoming.retain_in((id, 0)..=(id, u16::MAX), |_, _| false))
                    }
                    Change::MessageSaved { client_id, seq, message } => {
                        messages.insert((&**client_id, *seq), codec::encode_message(message).as_slice()).map(drop)
                    }
                    Change::MessageRemoved { client_id, seq } => messages.remove((&**client_id, *seq)).map(drop),
                    Change::IncomingAdded { client_id, pkid } => incoming.insert((&**client_id, *pkid), ()).map(drop),
                    Change::IncomingRemoved { client_id, pkid } => incoming.remove((&**client_id, *pkid)).map(drop),
                };
                done.map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let mut snapshot = Snapshot::default();

        let table = txn.open_table(RETAINED).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let topic = key.value();
            let (qos, payload) =
                codec::decode_retained(value.value()).map_err(|e| self.corrupt("retained", topic, e))?;
            snapshot.retained.push((ByteString::from(topic), qos, payload));
        }

        let table = txn.open_table(SESSIONS).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let client_id = key.value();
            let record = codec::decode_session(value.value()).map_err(|e| self.corrupt("sessions", client_id, e))?;
            snapshot.sessions.push(StoredSession { client_id: client_id.into(), record, ..StoredSession::default() });
        }
        let index: HashMap<String, usize> =
            snapshot.sessions.iter().enumerate().map(|(i, s)| (s.client_id.to_string(), i)).collect();
        let mut orphans: HashMap<String, usize> = HashMap::new();

        // Keys are (client id, seq) and (client id, packet id): iteration yields each client's
        // entries together, in ascending order.
        let table = txn.open_table(MESSAGES).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (client_id, seq) = key.value();
            let message =
                codec::decode_message(value.value()).map_err(|e| self.corrupt("messages", (client_id, seq), e))?;
            match index.get(client_id) {
                Some(&i) => snapshot.sessions[i].messages.push((seq, message)),
                None => *orphans.entry(client_id.to_string()).or_default() += 1,
            }
        }
        let table = txn.open_table(INCOMING).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, _) = entry.map_err(|e| self.error(e))?;
            let (client_id, pkid) = key.value();
            match index.get(client_id) {
                Some(&i) => snapshot.sessions[i].incoming.push(pkid),
                None => *orphans.entry(client_id.to_string()).or_default() += 1,
            }
        }
        for (client_id, entries) in orphans {
            tracing::warn!(
                path = %self.path.display(),
                client_id,
                entries,
                "persistence store: messages or packet ids of a client without a session record; ignored"
            );
        }
        Ok(snapshot)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // An empty durable commit persists every non-durable commit before it.
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))
    }
}

/// The file's length, 0 when it cannot be read (for a log line only).
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// Refuses a file that is neither missing, nor empty, nor a redb database: redb would report
/// only "invalid data", and a wrong `persistence.path` (pointing at the config file, say)
/// deserves a clear message. Returns whether the file holds a database (false: missing or
/// empty, a new store).
fn check_signature(path: &Path) -> Result<bool, StoreError> {
    let open_error = |reason: String| StoreError::Open { path: path.to_path_buf(), reason };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(open_error(err.to_string())),
    };
    let mut head = Vec::with_capacity(REDB_SIGNATURE.len());
    (&mut file).take(REDB_SIGNATURE.len() as u64).read_to_end(&mut head).map_err(|err| open_error(err.to_string()))?;
    if head.is_empty() || head == REDB_SIGNATURE {
        return Ok(!head.is_empty());
    }
    Err(open_error(
        "the file is not a redb database; if `persistence.path` names the wrong file, correct it, \
         otherwise move the file away to start with an empty store"
            .to_string(),
    ))
}

fn open_error(path: &Path, err: DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    let reason = match err {
        DatabaseError::DatabaseAlreadyOpen => "the file is already open (is another amqtt running with the same \
                                               `persistence.path`?)"
            .to_string(),
        DatabaseError::UpgradeRequired(version) => format!(
            "the file uses redb file format {version}, which this build cannot read; \
             open it with the amqtt that wrote it, or move it away to start with an empty store"
        ),
        DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => return StoreError::Corrupt { path, detail },
        DatabaseError::Storage(redb::StorageError::Io(err)) if err.kind() == ErrorKind::InvalidData => {
            return StoreError::Corrupt { path, detail: format!("unreadable database header ({err})") }
        }
        other => other.to_string(),
    };
    StoreError::Open { path, reason }
}

#[cfg(test)]
mod tests {
    use amqtt_protocol::QoS;
    use bytes::Bytes;

    use super::*;
    use crate::storage::{MessageState, SessionRecord, StoredMessage};

    fn store_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amqtt.redb");
        (dir, path)
    }

    fn message(state: MessageState, topic: &str, payload: &'static [u8]) -> StoredMessage {
        StoredMessage {
            state,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: topic.into(),
            payload: Bytes::from_static(payload),
        }
    }

    fn record(filter: &str, at: Option<u64>) -> SessionRecord {
        SessionRecord { subscriptions: vec![(filter.into(), QoS::AtLeastOnce)], disconnected_at: at }
    }

    /// Two sessions with messages in every state and incoming ids, and two retained messages.
    fn populate(store: &mut RedbStore) {
        let changes = vec![
            Change::RetainedSet { topic: "r/1".into(), qos: QoS::AtLeastOnce, payload: Bytes::from_static(b"one") },
            Change::RetainedSet { topic: "r/2".into(), qos: QoS::AtMostOnce, payload: Bytes::new() },
            Change::RetainedSet { topic: "r/3".into(), qos: QoS::AtMostOnce, payload: Bytes::from_static(b"x") },
            Change::SessionSaved { client_id: "alice".into(), record: record("a/#", None) },
            Change::SessionSaved { client_id: "bob".into(), record: record("b/+", Some(1_700_000_000)) },
            Change::MessageSaved {
                client_id: "alice".into(),
                seq: 2,
                message: message(MessageState::Queued, "a/2", b"2"),
            },
            Change::MessageSaved {
                client_id: "alice".into(),
                seq: 1,
                message: message(MessageState::Sent { pkid: 10 }, "a/1", b"1"),
            },
            Change::MessageSaved {
                client_id: "bob".into(),
                seq: 7,
                message: message(MessageState::Queued, "b/7", b"7"),
            },
            Change::IncomingAdded { client_id: "alice".into(), pkid: 300 },
            Change::IncomingAdded { client_id: "alice".into(), pkid: 5 },
            Change::IncomingAdded { client_id: "bob".into(), pkid: 6 },
        ];
        store.apply(&changes, true).unwrap();
    }

    fn expected() -> Snapshot {
        Snapshot {
            retained: vec![
                ("r/1".into(), QoS::AtLeastOnce, Bytes::from_static(b"one")),
                ("r/2".into(), QoS::AtMostOnce, Bytes::new()),
                ("r/3".into(), QoS::AtMostOnce, Bytes::from_static(b"x")),
            ],
            sessions: vec![
                StoredSession {
                    client_id: "alice".into(),
                    record: record("a/#", None),
                    messages: vec![
                        (1, message(MessageState::Sent { pkid: 10 }, "a/1", b"1")),
                        (2, message(MessageState::Queued, "a/2", b"2")),
                    ],
                    incoming: vec![5, 300],
                },
                StoredSession {
                    client_id: "bob".into(),
                    record: record("b/+", Some(1_700_000_000)),
                    messages: vec![(7, message(MessageState::Queued, "b/7", b"7"))],
                    incoming: vec![6],
                },
            ],
        }
    }

    #[test]
    fn every_change_kind_round_trips_through_load() {
        let (_dir, path) = store_path();
        let mut store = RedbStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), Snapshot::default());
        populate(&mut store);
        assert_eq!(store.load().unwrap(), expected());

        // Updates, removals and the non-durable path.
        let changes = vec![
            Change::RetainedCleared { topic: "r/2".into() },
            Change::RetainedSet { topic: "r/3".into(), qos: QoS::ExactlyOnce, payload: Bytes::from_static(b"y") },
            Change::SessionSaved { client_id: "alice".into(), record: record("a/b", Some(5)) },
            Change::MessageSaved {
                client_id: "alice".into(),
                seq: 1,
                message: message(MessageState::Released { pkid: 10 }, "a/1", b"1"),
            },
            Change::MessageRemoved { client_id: "alice".into(), seq: 2 },
            Change::IncomingRemoved { client_id: "alice".into(), pkid: 300 },
            // Removing what is not there is not an error.
            Change::MessageRemoved { client_id: "nobody".into(), seq: 1 },
            Change::IncomingRemoved { client_id: "alice".into(), pkid: 999 },
            Change::RetainedCleared { topic: "never/set".into() },
        ];
        store.apply(&changes, false).unwrap();
        let mut want = expected();
        want.retained.remove(1);
        want.retained[1] = ("r/3".into(), QoS::ExactlyOnce, Bytes::from_static(b"y"));
        let alice = &mut want.sessions[0];
        alice.record = record("a/b", Some(5));
        alice.messages = vec![(1, message(MessageState::Released { pkid: 10 }, "a/1", b"1"))];
        alice.incoming = vec![5];
        assert_eq!(store.load().unwrap(), want);
        store.sync().unwrap();
        assert_eq!(store.load().unwrap(), want);
    }

    #[test]
    fn reopening_after_drop_keeps_everything() {
        let (_dir, path) = store_path();
        let mut store = RedbStore::open(&path).unwrap();
        populate(&mut store);
        // A non-durable commit followed by sync, then a plain drop.
        store
            .apply(&[Change::RetainedSet { topic: "late".into(), qos: QoS::AtMostOnce, payload: Bytes::new() }], false)
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        let mut want = expected();
        want.retained.insert(0, ("late".into(), QoS::AtMostOnce, Bytes::new()));
        assert_eq!(store.load().unwrap(), want);
    }

    #[test]
    fn opening_gives_back_the_space_of_a_backlog_since_delivered() {
        let (_dir, path) = store_path();
        let mut store = RedbStore::open(&path).unwrap();
        let payload: &'static [u8] = &[7; 512];
        let sessions =
            (0..8).map(|i| Change::SessionSaved { client_id: format!("away-{i}").into(), record: record("a/#", None) });
        let messages = (0..8_000).map(|seq| Change::MessageSaved {
            client_id: format!("away-{}", seq % 8).into(),
            seq,
            message: message(MessageState::Queued, "a/b", payload),
        });
        store.apply(&sessions.chain(messages).collect::<Vec<_>>(), true).unwrap();
        let removed: Vec<Change> = (0..8_000)
            .filter(|seq| seq % 1_000 != 0)
            .map(|seq| Change::MessageRemoved { client_id: format!("away-{}", seq % 8).into(), seq })
            .collect();
        store.apply(&removed, true).unwrap();
        drop(store);
        let grown = file_len(&path);
        assert!(grown > 4_000_000, "8000 messages of 512 bytes take {grown} bytes");

        let store = RedbStore::open(&path).unwrap();
        let compacted = file_len(&path);
        assert!(compacted < grown / 4, "{grown} bytes before the reopen, {compacted} after");
        let kept: Vec<u64> =
            store.load().unwrap().sessions.iter().flat_map(|s| s.messages.iter().map(|m| m.0)).collect();
        assert_eq!(kept.len(), 8, "the messages still queued survive compaction: {kept:?}");
    }

    #[test]
    fn session_removed_removes_only_that_clients_messages_and_ids() {
        let (_dir, path) = store_path();
        let mut store = RedbStore::open(&path).unwrap();
        populate(&mut store);
        // Client ids that sort right next to "alice" must keep their entries.
        let neighbours = ["alic", "alice\0", "alice/", "alicf"];
        let mut changes = Vec::new();
        for id in neighbours {
            changes.push(Change::SessionSaved { client_id: id.into(), record: SessionRecord::default() });
            changes.push(Change::MessageSaved {
                client_id: id.into(),
                seq: 0,
                message: message(MessageState::Queued, "t", b""),
            });
            changes.push(Change::MessageSaved {
                client_id: id.into(),
                seq: u64::MAX,
                message: message(MessageState::Queued, "t", b""),
            });
            changes.push(Change::IncomingAdded { client_id: id.into(), pkid: 0 });
            changes.push(Change::IncomingAdded { client_id: id.into(), pkid: u16::MAX });
        }
        changes.push(Change::MessageSaved {
            client_id: "alice".into(),
            seq: u64::MAX,
            message: message(MessageState::Queued, "t", b""),
        });
        changes.push(Change::IncomingAdded { client_id: "alice".into(), pkid: u16::MAX });
        store.apply(&changes, true).unwrap();

        store.apply(&[Change::SessionRemoved { client_id: "alice".into(), superseded_by: None }], true).unwrap();
        let snapshot = store.load().unwrap();
        let ids: Vec<&str> = snapshot.sessions.iter().map(|s| &*s.client_id).collect();
        assert_eq!(ids, ["alic", "alice\0", "alice/", "alicf", "bob"]);
        for session in &snapshot.sessions[..4] {
            assert_eq!(session.messages.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [0, u64::MAX]);
            assert_eq!(session.incoming, [0, u16::MAX]);
        }
        assert_eq!(snapshot.sessions[4], expected().sessions[1]);
        assert_eq!(snapshot.retained, expected().retained);

        // Nothing of alice's is left in the tables, not even unreachable entries: a new
        // session with the same id starts empty.
        store
            .apply(&[Change::SessionSaved { client_id: "alice".into(), record: SessionRecord::default() }], true)
            .unwrap();
        let snapshot = store.load().unwrap();
        let alice = snapshot.sessions.iter().find(|s| s.client_id == "alice").unwrap();
        assert!(alice.messages.is_empty() && alice.incoming.is_empty(), "{alice:?}");
    }

    #[test]
    fn messages_without_a_session_record_are_left_out_of_load() {
        let (_dir, path) = store_path();
        let mut store = RedbStore::open(&path).unwrap();
        let changes = [
            Change::MessageSaved {
                client_id: "ghost".into(),
                seq: 1,
                message: message(MessageState::Queued, "t", b""),
            },
            Change::IncomingAdded { client_id: "ghost".into(), pkid: 1 },
        ];
        store.apply(&changes, true).unwrap();
        assert_eq!(store.load().unwrap(), Snapshot::default());
    }

    #[test]
    fn a_garbled_value_is_reported_as_corrupt_with_its_table_and_key() {
        let (_dir, path) = store_path();
        let mut store = RedbStore::open(&path).unwrap();
        populate(&mut store);
        drop(store);

        type Garble = Box<dyn Fn(&redb::WriteTransaction)>;
        let cases: [(&str, Garble, &str); 3] = [
            (
                "retained",
                Box::new(|txn| {
                    txn.open_table(RETAINED).unwrap().insert("r/1", [7u8, 7, 7].as_slice()).unwrap();
                }),
                "table retained, key \"r/1\": unknown value layout version 7",
            ),
            (
                "sessions",
                Box::new(|txn| {
                    let mut bytes = codec::encode_session(&record("a/#", None));
                    bytes.truncate(bytes.len() - 2);
                    txn.open_table(SESSIONS).unwrap().insert("bob", bytes.as_slice()).unwrap();
                }),
                "table sessions, key \"bob\": the value ends early",
            ),
            (
                "messages",
                Box::new(|txn| {
                    txn.open_table(MESSAGES).unwrap().insert(("alice", 2), [1u8, 0].as_slice()).unwrap();
                }),
                "table messages, key (\"alice\", 2): the value ends early",
            ),
        ];
        for (table, garble, want) in cases {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            garble(&txn);
            txn.commit().unwrap();
            drop(db);

            let store = RedbStore::open(&path).unwrap();
            let err = store.load().unwrap_err();
            let StoreError::Corrupt { detail, .. } = &err else { panic!("{table}: expected Corrupt, got {err:?}") };
            assert!(detail.starts_with(want), "{table}: {detail}");
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.ends_with("move the file away to start empty, or restore a backup"), "{message}");
            drop(store);

            // Repair this table so the next case reaches its own.
            let mut store = RedbStore::open(&path).unwrap();
            populate(&mut store);
        }
    }

    #[test]
    fn another_format_version_is_refused_and_its_data_kept() {
        for found in [FORMAT_VERSION + 1, 0] {
            let (_dir, path) = store_path();
            let mut store = RedbStore::open(&path).unwrap();
            populate(&mut store);
            drop(store);
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(FORMAT_KEY, found).unwrap();
            txn.commit().unwrap();
            drop(db);

            let err = RedbStore::open(&path).err().expect("open must fail");
            match &err {
                StoreError::IncompatibleVersion { found: f, expected, .. } => {
                    assert_eq!((*f, *expected), (found, FORMAT_VERSION))
                }
                other => panic!("expected IncompatibleVersion, got {other:?}"),
            }
            let message = err.to_string();
            let hint = if found > FORMAT_VERSION { "written by a newer amqtt" } else { "written by an older amqtt" };
            assert!(message.contains(hint), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");

            // Nothing was lost: with the version put back, everything loads.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(FORMAT_KEY, FORMAT_VERSION).unwrap();
            txn.commit().unwrap();
            drop(db);
            assert_eq!(RedbStore::open(&path).unwrap().load().unwrap(), expected());
        }
    }

    #[test]
    fn a_redb_file_of_someone_else_is_refused() {
        let (_dir, path) = store_path();
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("retained")).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = RedbStore::open(&path).err().expect("open must fail");
        assert!(matches!(&err, StoreError::Corrupt { detail, .. } if detail.contains("no format version")), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_redb_database_is_a_clear_error() {
        let (dir, path) = store_path();
        for content in [&b"listeners:\n  default:\n    bind: 0.0.0.0:1883\n"[..], b"redb", &[0u8; 8192]] {
            std::fs::write(&path, content).unwrap();
            let err = RedbStore::open(&path).err().expect("open must fail");
            assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("is not a redb database"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert_eq!(std::fs::read(&path).unwrap(), content, "the file must not change");
        }

        // The redb signature followed by garbage.
        let mut content = REDB_SIGNATURE.to_vec();
        content.extend(std::iter::repeat_n(0xA5, 8192));
        std::fs::write(&path, &content).unwrap();
        let err = RedbStore::open(&path).err().expect("open must fail");
        assert!(matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }), "{err:?}");

        // A folder, and a missing folder.
        let err = RedbStore::open(dir.path()).err().expect("open must fail");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let err = RedbStore::open(dir.path().join("no/such/dir/amqtt.redb")).err().expect("open must fail");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");

        // An empty file is a new store.
        std::fs::write(&path, b"").unwrap();
        assert_eq!(RedbStore::open(&path).unwrap().load().unwrap(), Snapshot::default());
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let (_dir, path) = store_path();
        let _store = RedbStore::open(&path).unwrap();
        let err = RedbStore::open(&path).err().expect("open must fail");
        assert!(err.to_string().contains("already open"), "{err}");
    }
}
