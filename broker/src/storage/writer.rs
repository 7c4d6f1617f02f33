//! The group-commit writer: one thread of its own owns the [`Store`] and commits what the
//! broker's actors send it.
//!
//! redb is blocking and an fsync takes milliseconds, so the store never runs on an actor's
//! thread. Actors hand their changes to a [`StorageHandle`] (cheap to clone) and go on; the
//! writer thread takes everything queued meanwhile (up to [`MAX_BATCH`] changes) into one
//! transaction, so under load many publishers share one commit and one fsync: throughput grows
//! with the load instead of being one fsync per message.
//!
//! Ordering: changes are committed in the order of the `submit`/`submit_and_wait` calls that
//! made them (both enqueue at call time), so a session that saves a message and later removes
//! it never sees the removal overtake the save. What a session submits carries its
//! registration's generation, so that the writer can drop what a taken-over session still
//! submits after its removal (see `fences`).
//!
//! Back-pressure: the queue is counted in changes. Callers awaiting their commit are slowed by
//! the queue naturally (their future resolves after everything before them is committed); the
//! router holds every publisher's acknowledgements until their commit, whatever the sync policy,
//! which bounds the queue by the publishers' in-flight windows. When the queue nevertheless holds
//! [`MAX_BACKLOG`] changes (the disk is slower than the broker, or changes nobody waits for
//! pile up), the next `submit` or `submit_and_wait` call blocks its thread until the writer has
//! taken a batch (about one commit), rather than dropping changes (data loss) or growing
//! without bound.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amqtt_protocol::ByteString;
use tokio::sync::oneshot;

use super::fences::Fences;
use super::{Change, Store, StoreError};
use crate::config::PersistenceSync;

/// At most this many changes go into one transaction (one request larger than this is
/// committed alone).
pub const MAX_BATCH: usize = 4096;

/// Changes queued and not yet committed beyond which submitting blocks (see the module doc).
pub const MAX_BACKLOG: usize = 65_536;

/// When changes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every batch is durable (fsync) before its waiters are answered.
    Always,
    /// Batches are committed without fsync and their waiters answered once that commit ends;
    /// one durable sync per interval (from the first commit after the previous sync) bounds what
    /// a crash can lose to that interval.
    Periodic(Duration),
}

impl From<PersistenceSync> for SyncPolicy {
    fn from(sync: PersistenceSync) -> SyncPolicy {
        match sync {
            PersistenceSync::Always => SyncPolicy::Always,
            PersistenceSync::Periodic(interval) => SyncPolicy::Periodic(interval),
        }
    }
}

/// Starts the writer thread.
pub struct StorageWriter;

impl StorageWriter {
    /// Starts the writer thread on `store`, with the [`MAX_BACKLOG`] limit.
    pub fn start(store: Box<dyn Store>, sync: SyncPolicy) -> std::io::Result<StorageHandle> {
        StorageWriter::start_with_limit(store, sync, MAX_BACKLOG)
    }

    /// Like [`StorageWriter::start`], with another back-pressure limit (in changes).
    pub fn start_with_limit(
        store: Box<dyn Store>,
        sync: SyncPolicy,
        max_backlog: usize,
    ) -> std::io::Result<StorageHandle> {
        let (tx, rx) = mpsc::channel();
        let backlog = Arc::new(Backlog {
            queued: AtomicUsize::new(0),
            limit: max_backlog.max(1),
            stopped: AtomicBool::new(false),
            lock: Mutex::new(()),
            room: Condvar::new(),
        });
        let thread_backlog = Arc::clone(&backlog);
        let thread = std::thread::Builder::new().name("amqtt-storage".to_string()).spawn(move || {
            let _stopped = StoppedOnExit(Arc::clone(&thread_backlog));
            Writer { store, sync, rx, backlog: thread_backlog, sync_due: None, fences: Fences::default() }.run()
        })?;
        Ok(StorageHandle { inner: Arc::new(HandleInner { tx, backlog, thread: Mutex::new(Some(thread)) }) })
    }
}

/// Where the broker's actors send their changes. Clones share one writer.
///
/// Dropping the last clone without [`StorageHandle::shutdown`] still commits and syncs what
/// was queued, but nobody waits for it.
#[derive(Clone)]
pub struct StorageHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    tx: Sender<Request>,
    backlog: Arc<Backlog>,
    thread: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
}

impl StorageHandle {
    /// Queues `changes` and returns at once (fire and forget). A failed commit is logged.
    /// Blocks only while the queue is over its limit (see the module doc).
    pub fn submit(&self, changes: Vec<Change>) {
        self.fire_and_forget(changes, None);
    }

    /// Like [`StorageHandle::submit`], for the session of registration `generation`: dropped
    /// if that session was taken over and removed meanwhile (see `fences`).
    pub fn submit_from_session(&self, generation: u64, changes: Vec<Change>) {
        self.fire_and_forget(changes, Some(generation));
    }

    fn fire_and_forget(&self, changes: Vec<Change>, session: Option<u64>) {
        if changes.is_empty() {
            return;
        }
        let count = changes.len();
        if self.enqueue(changes, None, session).is_err() {
            tracing::error!(changes = count, "persistence: the storage writer has stopped; changes not saved");
        }
    }

    /// The session of registration `generation` of `client_id` has stopped and submits no
    /// more: a fence put up against it comes down.
    pub fn retire(&self, client_id: ByteString, generation: u64) {
        // Fails only when the writer is gone, and its fences with it.
        let _ = self.inner.tx.send(Request::Retire { client_id, generation });
    }

    /// Queues `changes` now, and resolves once the batch that holds them is committed: durable
    /// with [`SyncPolicy::Always`], committed (durable within the interval) with
    /// [`SyncPolicy::Periodic`]. An empty `changes` resolves once everything queued before it
    /// is committed. Blocks only while the queue is over its limit (see the module doc).
    pub fn submit_and_wait(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let queued = self.enqueue(changes, Some(done), None);
        async move {
            queued?;
            answer.await.unwrap_or(Err(StoreError::Stopped))
        }
    }

    /// Changes queued and not yet committed.
    #[cfg(test)]
    pub fn backlog(&self) -> usize {
        self.inner.backlog.queued.load(Ordering::Relaxed)
    }

    /// Commits and syncs everything queued, then stops the writer thread and waits for it (the
    /// store is closed when this returns). Blocking: the broker calls it on SIGTERM, after the
    /// listeners stopped. Changes submitted afterwards are refused ([`StoreError::Stopped`]).
    /// Returns the result of the final sync; a second call returns `Ok(())`.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        let Some(thread) = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        // Fails only if the thread is gone already; joining tells how it ended.
        let _ = self.inner.tx.send(Request::Shutdown);
        thread.join().unwrap_or_else(|_| {
            tracing::error!("persistence: the storage writer thread panicked");
            Err(StoreError::Stopped)
        })
    }

    fn enqueue(&self, changes: Vec<Change>, done: Option<Waiter>, session: Option<u64>) -> Result<(), StoreError> {
        let backlog = &self.inner.backlog;
        backlog.wait_for_room()?;
        let count = changes.len();
        backlog.queued.fetch_add(count, Ordering::Relaxed);
        self.inner.tx.send(Request::Changes { changes, done, session }).map_err(|_| {
            backlog.release(count);
            StoreError::Stopped
        })
    }
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

enum Request {
    /// `session`: the generation of the session that submitted them; None for the router.
    Changes {
        changes: Vec<Change>,
        done: Option<Waiter>,
        session: Option<u64>,
    },
    Retire {
        client_id: ByteString,
        generation: u64,
    },
    Shutdown,
}

/// The count of queued changes, and where blocked submitters wait for room.
struct Backlog {
    queued: AtomicUsize,
    limit: usize,
    stopped: AtomicBool,
    lock: Mutex<()>,
    room: Condvar,
}

impl Backlog {
    fn wait_for_room(&self) -> Result<(), StoreError> {
        if self.queued.load(Ordering::Relaxed) < self.limit {
            return Ok(());
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.queued.load(Ordering::Relaxed) >= self.limit {
            if self.stopped.load(Ordering::Relaxed) {
                return Err(StoreError::Stopped);
            }
            guard = self.room.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    fn release(&self, count: usize) {
        let before = self.queued.fetch_sub(count, Ordering::Relaxed);
        if before >= self.limit {
            // Taking the lock orders this wake-up after a waiter's check (no lost wake-up).
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.room.notify_all();
        }
    }
}

/// Marks the writer stopped however its thread ends (a panicking store included), so that no
/// submitter blocks forever on a queue nobody drains.
struct StoppedOnExit(Arc<Backlog>);

impl Drop for StoppedOnExit {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Relaxed);
        drop(self.0.lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.0.room.notify_all();
    }
}

/// Requests taken for one transaction.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    /// Each request's range in `changes`, and its waiter.
    requests: Vec<(std::ops::Range<usize>, Option<Waiter>)>,
}

impl Batch {
    fn add(&mut self, changes: Vec<Change>, done: Option<Waiter>) {
        let start = self.changes.len();
        self.changes.extend(changes);
        self.requests.push((start..self.changes.len(), done));
    }
}

struct Writer {
    store: Box<dyn Store>,
    sync: SyncPolicy,
    rx: Receiver<Request>,
    backlog: Arc<Backlog>,
    /// Periodic: when the oldest non-durable commit must be synced; None when all is durable.
    sync_due: Option<Instant>,
    fences: Fences,
}

enum Next {
    Request(Request),
    SyncDue,
    /// Every handle is gone, or shutdown was asked and the queue is empty.
    Done,
}

impl Writer {
    fn run(mut self) -> Result<(), StoreError> {
        let mut carry: Option<Request> = None;
        let mut stopping = false;
        loop {
            let first = match carry.take().map(Next::Request).unwrap_or_else(|| self.next(stopping)) {
                Next::Request(request) => request,
                Next::SyncDue => {
                    self.sync_now();
                    continue;
                }
                Next::Done => break,
            };
            let mut batch = Batch::default();
            match first {
                Request::Changes { changes, done, session } => self.add(&mut batch, changes, done, session),
                Request::Retire { client_id, generation } => {
                    self.fences.retire(&client_id, generation);
                    continue;
                }
                Request::Shutdown => {
                    stopping = true;
                    continue;
                }
            }
            // Group commit: everything queued meanwhile joins this transaction.
            while batch.changes.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Request::Changes { changes, done, session }) => {
                        if batch.changes.len() + changes.len() > MAX_BATCH {
                            carry = Some(Request::Changes { changes, done, session });
                            break;
                        }
                        self.add(&mut batch, changes, done, session);
                    }
                    Ok(Request::Retire { client_id, generation }) => self.fences.retire(&client_id, generation),
                    Ok(Request::Shutdown) => stopping = true,
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // What was queued is committed; make it durable before the store closes.
        if self.sync_due.take().is_some() {
            self.store.sync().inspect_err(|err| tracing::error!(error = %err, "persistence: final sync failed"))?;
        }
        Ok(())
    }

    /// Adds a request to the batch, in queue order: a removal's fence holds back the changes
    /// that come after it.
    fn add(&mut self, batch: &mut Batch, mut changes: Vec<Change>, done: Option<Waiter>, session: Option<u64>) {
        match session {
            None => self.fences.put_up(&changes),
            Some(generation) => {
                let dropped = self.fences.hold_back(generation, &mut changes);
                if dropped > 0 {
                    tracing::debug!(dropped, generation, "persistence: changes of a taken-over session dropped");
                    self.backlog.release(dropped);
                }
            }
        }
        batch.add(changes, done);
    }

    /// Waits for the next request; while stopping, only takes what is already queued.
    fn next(&self, stopping: bool) -> Next {
        if stopping {
            return self.rx.try_recv().map_or(Next::Done, Next::Request);
        }
        match self.sync_due {
            None => self.rx.recv().map_or(Next::Done, Next::Request),
            Some(due) => match self.rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(request) => Next::Request(request),
                Err(RecvTimeoutError::Timeout) => Next::SyncDue,
                Err(RecvTimeoutError::Disconnected) => Next::Done,
            },
        }
    }

    fn commit(&mut self, batch: Batch) {
        let durable = self.sync == SyncPolicy::Always;
        let count = batch.changes.len();
        let result = self.store.apply(&batch.changes, durable);
        // Released before any waiter hears back, so that a waiter sees its changes counted out.
        self.backlog.release(count);
        match result {
            Ok(()) => {
                for (_, done) in batch.requests {
                    answer(done, Ok(()));
                }
            }
            // A problem of one request (a value too large, say): commit the others without it.
            Err(StoreError::Database { .. }) if batch.requests.len() > 1 => {
                tracing::warn!(changes = count, "persistence: a batch failed; committing its requests one by one");
                for (range, done) in batch.requests {
                    let result = self.store.apply(&batch.changes[range], durable);
                    if let Err(err) = &result {
                        tracing::error!(error = %err, "persistence: commit failed; changes not saved");
                    }
                    answer(done, result);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, changes = count, "persistence: commit failed; changes not saved");
                for (_, done) in batch.requests {
                    answer(done, Err(err.clone()));
                }
            }
        }
        if let SyncPolicy::Periodic(interval) = self.sync {
            let now = Instant::now();
            let due = *self.sync_due.get_or_insert(now + interval);
            if now >= due {
                self.sync_now();
            }
        }
    }

    fn sync_now(&mut self) {
        match self.store.sync() {
            Ok(()) => self.sync_due = None,
            Err(err) => {
                // Retried at the next interval; the commits stay visible meanwhile.
                tracing::error!(error = %err, "persistence: periodic sync failed");
                if let SyncPolicy::Periodic(interval) = self.sync {
                    self.sync_due = Some(Instant::now() + interval);
                }
            }
        }
    }
}

fn answer(done: Option<Waiter>, result: Result<(), StoreError>) {
    if let Some(done) = done {
        // The waiter may have given up (its future dropped): nothing to tell then.
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::SyncSender;

    use amqtt_protocol::QoS;
    use bytes::Bytes;

    use super::*;
    use crate::storage::{RedbStore, Snapshot};

    fn retained(i: usize) -> Change {
        Change::RetainedSet {
            topic: format!("t/{i}").into(),
            qos: QoS::AtLeastOnce,
            payload: Bytes::from(i.to_string()),
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }

    /// What a [`FakeStore`] was asked to do.
    #[derive(Debug, PartialEq)]
    enum Call {
        Apply { changes: usize, durable: bool },
        Sync,
    }

    /// Records calls; with a gate, each `apply` says it started and then waits to be let go.
    struct FakeStore {
        calls: Arc<Mutex<Vec<Call>>>,
        gate: Option<(SyncSender<()>, Receiver<()>)>,
        fail: bool,
    }

    impl FakeStore {
        fn new() -> (FakeStore, Arc<Mutex<Vec<Call>>>) {
            let calls = Arc::new(Mutex::new(Vec::new()));
            (FakeStore { calls: Arc::clone(&calls), gate: None, fail: false }, calls)
        }

        /// Returns (entered: one message per apply started, release: one message lets one apply
        /// finish; dropping it lets all finish).
        fn gated(&mut self) -> (Receiver<()>, SyncSender<()>) {
            let (entered_tx, entered_rx) = mpsc::sync_channel(100);
            let (release_tx, release_rx) = mpsc::sync_channel(100);
            self.gate = Some((entered_tx, release_rx));
            (entered_rx, release_tx)
        }
    }

    impl Store for FakeStore {
        fn apply(&mut self, changes: &[Change], durable: bool) -> Result<(), StoreError> {
            if let Some((entered, release)) = &self.gate {
                // Once the test drops either end, the gate stays open.
                let _ = entered.send(());
                let _ = release.recv();
            }
            self.calls.lock().unwrap().push(Call::Apply { changes: changes.len(), durable });
            if self.fail {
                return Err(StoreError::Io {
                    path: "fake".into(),
                    source: Arc::new(std::io::Error::other("disk full")),
                });
            }
            Ok(())
        }
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            self.calls.lock().unwrap().push(Call::Sync);
            Ok(())
        }
    }

    fn calls(calls: &Mutex<Vec<Call>>) -> Vec<Call> {
        std::mem::take(&mut *calls.lock().unwrap())
    }

    /// The changes applied since the log was last read, over all commits.
    fn changes_applied(log: &Mutex<Vec<Call>>) -> usize {
        calls(log)
            .iter()
            .map(|call| match call {
                Call::Apply { changes, .. } => *changes,
                Call::Sync => 0,
            })
            .sum()
    }

    #[test]
    fn many_waiters_from_several_threads_complete_and_everything_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amqtt.redb");
        let handle = StorageWriter::start(Box::new(RedbStore::open(&path).unwrap()), SyncPolicy::Always).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    block_on(async {
                        // 250 tasks per thread, all waiting at once.
                        let tasks: Vec<_> = (0..250)
                            .map(|i| tokio::spawn(handle.submit_and_wait(vec![retained(t * 250 + i)])))
                            .collect();
                        for task in tasks {
                            task.await.unwrap().unwrap();
                        }
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(handle.backlog(), 0);
        handle.shutdown().unwrap();

        let snapshot = RedbStore::open(&path).unwrap().load().unwrap();
        let mut topics: Vec<String> = snapshot.retained.iter().map(|(t, _, _)| t.to_string()).collect();
        topics.sort();
        let mut want: Vec<String> = (0..1000).map(|i| format!("t/{i}")).collect();
        want.sort();
        assert_eq!(topics, want);
    }

    #[test]
    fn queued_requests_share_one_transaction_of_at_most_max_batch_changes() {
        let (mut store, log) = FakeStore::new();
        let (entered, release) = store.gated();
        let handle = StorageWriter::start(Box::new(store), SyncPolicy::Always).unwrap();

        // The writer takes the first request and is held inside its commit...
        let first = handle.submit_and_wait(vec![retained(0)]);
        entered.recv().unwrap();
        // ...while 5000 more are queued: one of 2 changes, then single changes.
        let mut waiters = vec![handle.submit_and_wait(vec![retained(1), retained(2)])];
        for i in 3..5002 {
            waiters.push(handle.submit_and_wait(vec![retained(i)]));
        }
        assert_eq!(handle.backlog(), 5002);
        drop(release);
        block_on(async {
            first.await.unwrap();
            for waiter in waiters {
                waiter.await.unwrap();
            }
        });
        assert_eq!(
            calls(&log),
            [
                Call::Apply { changes: 1, durable: true },
                Call::Apply { changes: MAX_BATCH, durable: true },
                Call::Apply { changes: 5001 - MAX_BATCH, durable: true },
            ]
        );
        assert_eq!(handle.backlog(), 0);
        drop(entered);
        handle.shutdown().unwrap();
        // Always: everything was durable already; no extra sync.
        assert_eq!(calls(&log), []);
    }

    #[test]
    fn periodic_answers_waiters_after_a_non_durable_commit_and_syncs_later() {
        let (store, log) = FakeStore::new();
        // An interval no test run reaches: the waiter must not wait for it.
        let handle = StorageWriter::start(Box::new(store), SyncPolicy::Periodic(Duration::from_secs(3600))).unwrap();
        block_on(handle.submit_and_wait(vec![retained(1), retained(2)])).unwrap();
        block_on(handle.submit_and_wait(vec![retained(3)])).unwrap();
        assert_eq!(
            calls(&log),
            [Call::Apply { changes: 2, durable: false }, Call::Apply { changes: 1, durable: false }]
        );
        handle.shutdown().unwrap();
        assert_eq!(calls(&log), [Call::Sync]);
    }

    #[test]
    fn periodic_syncs_once_the_interval_has_passed() {
        let (store, log) = FakeStore::new();
        let handle = StorageWriter::start(Box::new(store), SyncPolicy::Periodic(Duration::ZERO)).unwrap();
        block_on(handle.submit_and_wait(vec![retained(1)])).unwrap();
        // The sync follows the commit on the writer thread; an empty request after it is
        // answered only once the sync is done.
        block_on(handle.submit_and_wait(Vec::new())).unwrap();
        let got = calls(&log);
        assert_eq!(got[..2], [Call::Apply { changes: 1, durable: false }, Call::Sync]);
        handle.shutdown().unwrap();
    }

    #[test]
    fn shutdown_persists_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("amqtt.redb");
        for policy in [SyncPolicy::Always, SyncPolicy::Periodic(Duration::from_secs(3600))] {
            let handle = StorageWriter::start(Box::new(RedbStore::open(&path).unwrap()), policy).unwrap();
            for i in 0..500 {
                handle.submit(vec![retained(i)]);
            }
            handle.submit(vec![Change::RetainedCleared { topic: "t/0".into() }]);
            handle.shutdown().unwrap();
            // A second shutdown is harmless; later submissions are refused.
            handle.shutdown().unwrap();
            handle.submit(vec![retained(1000)]);
            assert!(matches!(block_on(handle.submit_and_wait(vec![retained(1001)])), Err(StoreError::Stopped)));

            // The writer closed the file: it can be opened again at once.
            let snapshot = RedbStore::open(&path).unwrap().load().unwrap();
            assert_eq!(snapshot.retained.len(), 499, "{policy:?}");
            assert!(snapshot.retained.iter().all(|(t, _, _)| t != "t/0" && t != "t/1000" && t != "t/1001"));
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_failed_commit_is_reported_to_the_waiters_of_its_batch() {
        let (mut store, log) = FakeStore::new();
        store.fail = true;
        let handle = StorageWriter::start(Box::new(store), SyncPolicy::Always).unwrap();
        let err = block_on(handle.submit_and_wait(vec![retained(1)])).unwrap_err();
        assert!(matches!(&err, StoreError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("disk full"), "{err}");
        // The writer goes on after a failure.
        handle.submit(vec![retained(2), retained(3)]);
        assert!(block_on(handle.submit_and_wait(Vec::new())).is_err());
        let applied = changes_applied(&log);
        assert_eq!(applied, 3);
        handle.shutdown().unwrap();
    }

    #[test]
    fn a_taken_over_sessions_late_changes_are_dropped_until_it_retires() {
        let (store, log) = FakeStore::new();
        let handle = StorageWriter::start(Box::new(store), SyncPolicy::Always).unwrap();
        let added = |pkid| Change::IncomingAdded { client_id: "taken".into(), pkid };
        handle.submit(vec![Change::SessionRemoved { client_id: "taken".into(), superseded_by: Some(2) }]);
        // The old session (generation 1) before it got its TakeOver: dropped.
        handle.submit_from_session(1, vec![added(1), added(2)]);
        // The session that took over.
        handle.submit_from_session(2, vec![added(3)]);
        handle.retire("taken".into(), 1);
        handle.submit_from_session(1, vec![added(4)]);
        block_on(handle.submit_and_wait(Vec::new())).unwrap();
        assert_eq!(changes_applied(&log), 3, "the removal, then packet ids 3 and 4");
        assert_eq!(handle.backlog(), 0, "dropped changes leave the backlog too");
        handle.shutdown().unwrap();
    }

    #[test]
    fn a_full_queue_holds_submitters_until_the_writer_takes_a_batch() {
        let (mut store, log) = FakeStore::new();
        let (entered, release) = store.gated();
        let handle = StorageWriter::start_with_limit(Box::new(store), SyncPolicy::Always, 10).unwrap();
        handle.submit(vec![retained(0)]);
        entered.recv().unwrap();
        // The writer is held inside its first commit; this fills the queue to the limit.
        handle.submit((1..10).map(retained).collect());
        assert_eq!(handle.backlog(), 10);
        let blocked = {
            let (handle, log) = (handle.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                handle.submit(vec![retained(10)]);
                // How many commits had finished when the submitter was let go.
                log.lock().unwrap().len()
            })
        };
        // The blocked submitter's change cannot be counted until the writer makes room.
        assert_eq!(handle.backlog(), 10);
        drop(release);
        assert!(blocked.join().unwrap() >= 1, "the submitter must wait for the first commit to finish");
        block_on(handle.submit_and_wait(Vec::new())).unwrap();
        assert_eq!(handle.backlog(), 0);
        let applied = changes_applied(&log);
        assert_eq!(applied, 11);
        drop(entered);
        handle.shutdown().unwrap();
    }

    #[test]
    fn a_writer_that_died_releases_blocked_submitters() {
        struct Panics;
        impl Store for Panics {
            fn apply(&mut self, _: &[Change], _: bool) -> Result<(), StoreError> {
                panic!("store bug")
            }
            fn load(&self) -> Result<Snapshot, StoreError> {
                Ok(Snapshot::default())
            }
            fn sync(&mut self) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let handle = StorageWriter::start_with_limit(Box::new(Panics), SyncPolicy::Always, 1).unwrap();
        assert!(matches!(block_on(handle.submit_and_wait(vec![retained(1)])), Err(StoreError::Stopped)));
        // The queue may still count the lost change; a submitter must not block on it forever.
        handle.submit(vec![retained(2)]);
        assert!(matches!(block_on(handle.submit_and_wait(vec![retained(3)])), Err(StoreError::Stopped)));
        assert!(matches!(handle.shutdown(), Err(StoreError::Stopped)));
    }
}
