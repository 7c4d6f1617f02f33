//! Runs hash verifications off the threads that serve clients, a bounded number at a time.
//!
//! A verification costs tens to hundreds of milliseconds of CPU (argon2id as aMQTT writes it
//! also takes 64 MiB of memory). Run on a session thread, it would stall every client of that
//! thread; run without a bound, a burst of CONNECTs would take all the memory. So each one
//! goes to tokio's blocking pool, and a semaphore lets at most one per core run at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::hash::StoredHash;

#[derive(Debug)]
pub struct Verifier {
    slots: Arc<Semaphore>,
    /// Verifications started, decoys included: what shows, without timing anything, that an
    /// unknown user costs one too.
    started: AtomicU64,
}

impl Verifier {
    /// At most `concurrency` verifications at a time (at least one).
    pub fn new(concurrency: usize) -> Verifier {
        Verifier { slots: Arc::new(Semaphore::new(concurrency.max(1))), started: AtomicU64::new(0) }
    }

    /// One verification per core of this machine.
    pub fn per_core() -> Verifier {
        Verifier::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How many verifications were started so far.
    pub fn verifications(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether `password` matches `hash`. Inside a tokio runtime the work runs on its blocking
    /// pool; without one (a caller that blocks anyway) it runs right here.
    pub async fn verify(&self, hash: Arc<StoredHash>, password: Vec<u8>) -> bool {
        // The permit travels with the work, so it is held until the hashing ends even when the
        // client gives up (and this future is dropped) first.
        let Ok(permit) = self.slots.clone().acquire_owned().await else { return false };
        self.started.fetch_add(1, Ordering::Relaxed);
        let work = move || {
            let matches = hash.verify(&password);
            drop(permit);
            matches
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn_blocking(work).await.unwrap_or_else(|error| {
                tracing::error!("password verification did not finish: {error}");
                false
            }),
            Err(_) => work(),
        }
    }
}
