//! The router's side of persistence: what routing changes in durable state (retained messages,
//! persistent sessions' subscriptions) goes to the storage writer, and a publisher's
//! acknowledgements wait until what its batch changed is committed: on disk with `sync: always`,
//! in the store's file without an fsync with `sync: periodic`.
//!
//! With `periodic` the wait guarantees nothing more, but it is the back-pressure: each publisher
//! then has at most its in-flight window waiting on the writer, so the writer's queue, and the
//! number of messages stored and not yet delivered, stay small. Acknowledged at once, publishers
//! ran ahead of the writer until its queue was full (`MAX_BACKLOG`) and blocked the router's
//! thread: 300 ms of latency, a 33 MB store and 74 MiB of RSS in the persistence benchmark, and
//! lower throughput than `always` (docs/BENCHMARKS.md, "Persistence").
//!
//! Answers that wait are kept in commit order: the writer commits batches in the order they
//! were submitted, so when any wait ends, the oldest waiting answer is the one whose commit
//! just ended. A batch that changed nothing durable does not wait, unless an older answer still
//! does (it must not overtake it: a publisher's acknowledgements go out in order).

use std::collections::VecDeque;

use actix::Addr;
use tracing::error;

use crate::session::{Routed, Session};
use crate::storage::{Change, StorageHandle, StoreError};

pub(crate) struct Durable {
    storage: StorageHandle,
    /// Changes of the batch being routed.
    changes: Vec<Change>,
    /// Answers to publishers waiting for their batch's commit, oldest first.
    waiting: VecDeque<Option<(Addr<Session>, Routed)>>,
}

/// What to do with a publisher's answer once its batch is routed.
pub(crate) enum Answer {
    /// Send it now.
    Now(Option<(Addr<Session>, Routed)>),
    /// Send it once this commit ends (then call [`Durable::committed`]).
    AfterCommit(futures_util::future::BoxFuture<'static, Result<(), StoreError>>),
}

impl Durable {
    pub(crate) fn new(storage: StorageHandle) -> Self {
        Durable { storage, changes: Vec::new(), waiting: VecDeque::new() }
    }

    pub(crate) fn record(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Saves changes outside a publisher's batch (subscriptions, sessions): nobody waits.
    pub(crate) fn save(&mut self, changes: Vec<Change>) {
        self.storage.submit(changes);
    }

    /// What was recorded since the last batch, for a caller that saves it itself.
    pub(crate) fn take_recorded(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Ends a batch: submits what it changed, and says when `answer` may go out.
    pub(crate) fn finish_batch(&mut self, answer: Option<(Addr<Session>, Routed)>) -> Answer {
        let changes = std::mem::take(&mut self.changes);
        if answer.is_none() && changes.is_empty() {
            return Answer::Now(None);
        }
        let must_wait = answer.is_some() && !changes.is_empty();
        if !must_wait && self.waiting.is_empty() {
            self.storage.submit(changes);
            return Answer::Now(answer);
        }
        // Either this batch waits for its commit, or an older answer still waits and this one
        // queues behind it (an empty change list is a barrier: it ends after the older ones).
        self.waiting.push_back(answer);
        Answer::AfterCommit(Box::pin(self.storage.submit_and_wait(changes)))
    }

    /// The oldest waiting commit ended: its answer, marked failed if the commit did.
    pub(crate) fn committed(&mut self, result: Result<(), StoreError>) -> Option<(Addr<Session>, Routed)> {
        let (publisher, mut routed) = self.waiting.pop_front().flatten()?;
        if let Err(error) = result {
            error!(%error, "persistence: a commit failed; its publisher is disconnected without acknowledgements");
            routed.stored = false;
        }
        Some((publisher, routed))
    }
}
