//! Failed-login rate limiting: an address whose logins fail `max-failed-logins` times within
//! `failed-login-window` is refused for `failed-login-ban` without its credentials being looked
//! at (CONNACK 0x05).
//!
//! Why here, before the auth chain: a password guess costs the broker a hash verification (tens
//! of milliseconds of CPU, 64 MiB for aMQTT's argon2id), and guessing is what an attacker does
//! many times. A banned address costs a map lookup instead.
//!
//! Addresses are counted as a client can change them: an IPv4 address as is, an IPv6 address by
//! its /64 (one host usually holds a whole /64, and can pick a new address in it for every
//! connection). An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, a dual-stack listener) counts as
//! its IPv4 address. Loopback and private addresses are not exempt. A successful login does not
//! reset its address's count: otherwise an attacker who holds any account could log in with it
//! between guesses at another.
//!
//! The table holds at most [`MAX_TRACKED`] addresses; when full, the one whose window started
//! first makes room. It is one `std::sync::Mutex` held for a lookup or an update and never
//! across an await: logins are rare next to messages, and each costs more than the lock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tracing::warn;

use crate::config::FailedLoginLimit;

/// Most addresses tracked at once (about 100 bytes each).
pub(crate) const MAX_TRACKED: usize = 10_000;

/// Where failed logins come from, as they are counted: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6Net(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Source::V4(v4) => v4.fmt(f),
            Source::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(net) << 64)),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    /// Which item of `Table::order` stands for this entry; older items for its source are stale.
    stamp: u64,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Source, Entry>,
    /// Sources by the start of their window, oldest first, for eviction. An item whose stamp is
    /// not its entry's any more (the entry was removed or started a new window) is stale and
    /// skipped; stale items are swept out when they are as many as the entries.
    order: VecDeque<(Source, u64)>,
    next_stamp: u64,
}

impl Table {
    /// A fresh entry for `source` at the back of the eviction order, evicting the oldest
    /// when the table is full.
    fn start(&mut self, source: Source, now: Instant, capacity: usize) -> &mut Entry {
        if !self.entries.contains_key(&source) {
            while self.entries.len() >= capacity {
                let Some((oldest, stamp)) = self.order.pop_front() else { break };
                if self.entries.get(&oldest).is_some_and(|entry| entry.stamp == stamp) {
                    self.entries.remove(&oldest);
                }
            }
        }
        if self.order.len() >= 2 * capacity {
            let entries = &self.entries;
            self.order.retain(|(source, stamp)| entries.get(source).is_some_and(|entry| entry.stamp == *stamp));
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.push_back((source, stamp));
        let entry = Entry { failures: 0, window_start: now, banned_until: None, stamp };
        match self.entries.entry(source) {
            std::collections::hash_map::Entry::Occupied(mut occupied) => {
                occupied.insert(entry);
                occupied.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(vacant) => vacant.insert(entry),
        }
    }
}

/// The failed logins of every address, shared by every session through the plugin host.
#[derive(Debug)]
pub(crate) struct FailedLogins {
    limit: FailedLoginLimit,
    capacity: usize,
    table: Mutex<Table>,
    /// When the last ban to end ends, in ms since `origin`: until a ban exists, and once every
    /// ban is over, a CONNECT is checked without taking the lock.
    bans_end_ms: AtomicU64,
    origin: Instant,
}

impl FailedLogins {
    pub(crate) fn new(limit: FailedLoginLimit) -> FailedLogins {
        FailedLogins::with_capacity(limit, MAX_TRACKED)
    }

    fn with_capacity(limit: FailedLoginLimit, capacity: usize) -> FailedLogins {
        FailedLogins {
            limit,
            capacity: capacity.max(1),
            table: Mutex::default(),
            bans_end_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn enabled(&self) -> bool {
        self.limit.max_failures > 0
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Nothing panics with the lock held but an allocation failure; the table is still sound.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether logins from `ip` are refused right now. A ban that is over is forgotten, so the
    /// address starts afresh.
    pub(crate) fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() || self.ms_since_origin(now) >= self.bans_end_ms.load(Ordering::Relaxed) {
            return false;
        }
        let source = Source::of(ip);
        let mut table = self.table();
        match table.entries.get(&source).and_then(|entry| entry.banned_until) {
            Some(until) if now < until => true,
            Some(_) => {
                table.entries.remove(&source);
                false
            }
            None => false,
        }
    }

    /// Counts a failed login from `ip`; bans the address (and logs it, once per ban) when that
    /// makes `max-failed-logins` within the window.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let source = Source::of(ip);
        let FailedLoginLimit { max_failures, window, ban } = self.limit;
        let mut table = self.table();
        let current = table.entries.get(&source).is_some_and(|entry| match entry.banned_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(entry.window_start) < window,
        });
        let entry = match table.entries.get_mut(&source) {
            Some(entry) if current => entry,
            _ => table.start(source, now, self.capacity),
        };
        entry.failures = entry.failures.saturating_add(1);
        if entry.banned_until.is_none() && entry.failures >= max_failures {
            entry.banned_until = Some(now + ban);
            // Rounded up, so that the lock-free check never ends a ban early.
            self.bans_end_ms.fetch_max(self.ms_since_origin(now + ban) + 1, Ordering::Relaxed);
            let failures = entry.failures;
            drop(table);
            warn!(
                %ip,
                address = %source,
                failures,
                ban = ?ban,
                "too many failed logins: logins from this address refused (CONNACK 5) for the ban time \
                 (auth.max-failed-logins, failed-login-window, failed-login-ban)"
            );
        }
    }

    fn ms_since_origin(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limit(max_failures: u32) -> FailedLoginLimit {
        FailedLoginLimit { max_failures, window: Duration::from_secs(60), ban: Duration::from_secs(30) }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn banned_after_max_failures_within_the_window_until_the_ban_ends() {
        let logins = FailedLogins::new(limit(3));
        let (peer, t0) = (ip("192.0.2.1"), Instant::now());
        for i in 0..2 {
            logins.failed(peer, t0 + Duration::from_secs(i));
            assert!(!logins.is_banned(peer, t0 + Duration::from_secs(i)), "after {} failures", i + 1);
        }
        logins.failed(peer, t0 + Duration::from_secs(2));
        assert!(logins.is_banned(peer, t0 + Duration::from_secs(2)));
        assert!(logins.is_banned(peer, t0 + Duration::from_secs(31)));
        assert!(!logins.is_banned(ip("192.0.2.2"), t0 + Duration::from_secs(3)), "another address");
        assert!(!logins.is_banned(peer, t0 + Duration::from_secs(32)), "ban over");
        logins.failed(peer, t0 + Duration::from_secs(33));
        assert!(!logins.is_banned(peer, t0 + Duration::from_secs(33)), "counting starts afresh after a ban");
    }

    #[test]
    fn failures_of_an_earlier_window_do_not_count() {
        let logins = FailedLogins::new(limit(3));
        let (peer, t0) = (ip("192.0.2.1"), Instant::now());
        logins.failed(peer, t0);
        logins.failed(peer, t0 + Duration::from_secs(1));
        logins.failed(peer, t0 + Duration::from_secs(60));
        assert!(!logins.is_banned(peer, t0 + Duration::from_secs(60)), "third failure in a new window");
        logins.failed(peer, t0 + Duration::from_secs(61));
        logins.failed(peer, t0 + Duration::from_secs(62));
        assert!(logins.is_banned(peer, t0 + Duration::from_secs(62)));
    }

    #[test]
    fn zero_disables_and_tracks_nothing() {
        let logins = FailedLogins::new(limit(0));
        let t0 = Instant::now();
        for _ in 0..100 {
            logins.failed(ip("192.0.2.1"), t0);
        }
        assert!(!logins.is_banned(ip("192.0.2.1"), t0));
        assert_eq!(logins.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let logins = FailedLogins::new(limit(2));
        let t0 = Instant::now();
        logins.failed(ip("2001:db8:1:2::1"), t0);
        logins.failed(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(logins.is_banned(ip("2001:db8:1:2::77"), t0), "same /64");
        assert!(!logins.is_banned(ip("2001:db8:1:3::1"), t0), "another /64");
        logins.failed(ip("::ffff:198.51.100.7"), t0);
        logins.failed(ip("198.51.100.7"), t0);
        assert!(logins.is_banned(ip("198.51.100.7"), t0));
        assert_eq!(Source::of(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest_window() {
        let logins = FailedLogins::with_capacity(limit(2), 4);
        let t0 = Instant::now();
        let peer = |i: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
        logins.failed(peer(0), t0);
        logins.failed(peer(0), t0);
        assert!(logins.is_banned(peer(0), t0));
        for i in 1..=3 {
            logins.failed(peer(i), t0);
        }
        assert_eq!(logins.tracked(), 4);
        logins.failed(peer(4), t0);
        assert_eq!(logins.tracked(), 4);
        assert!(!logins.is_banned(peer(0), t0), "the oldest was evicted to make room");
        // Many more sources: still bounded, and the eviction order stays bounded too.
        for round in 0..50u8 {
            for i in 0..20u8 {
                logins.failed(IpAddr::V4(Ipv4Addr::new(10, round, i, 1)), t0);
            }
        }
        let table = logins.table();
        assert_eq!(table.entries.len(), 4);
        assert!(table.order.len() <= 2 * 4, "order holds {} items", table.order.len());
    }

    #[test]
    fn a_source_that_starts_a_new_window_moves_to_the_back() {
        let logins = FailedLogins::with_capacity(limit(2), 2);
        let t0 = Instant::now();
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        logins.failed(a, t0);
        logins.failed(b, t0 + Duration::from_secs(1));
        // a's window ended: its new one is younger than b's.
        logins.failed(a, t0 + Duration::from_secs(61));
        logins.failed(c, t0 + Duration::from_secs(62));
        logins.failed(a, t0 + Duration::from_secs(62));
        assert!(logins.is_banned(a, t0 + Duration::from_secs(62)), "b was evicted, not a");
    }
}
