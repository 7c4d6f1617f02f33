//! `max-topic-length` and `max-topic-levels`: the broker's bounds on a topic, tighter than the
//! protocol's own (65535 bytes).
//!
//! Why bound topics at all: a topic's bytes are kept in every subscription, retained message and
//! queued copy, and each of its levels is one node of the router's subscription tree and one
//! step of every match, so a client sending deep or long topics costs the broker (and everyone
//! else on it) memory and time. The checks run on every PUBLISH, so they cost a length compare;
//! levels are counted (a byte count, no allocation) only for a topic long enough to have more
//! levels than allowed.

use crate::stats::Stats;

/// The limits, shared by every session through its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    max_length: usize,
    max_levels: usize,
}

/// A topic over one of the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicLimitExceeded {
    #[error("topic of {len} bytes is longer than max-topic-length ({max})")]
    TooLong { len: usize, max: usize },
    #[error("topic of {levels} levels has more than max-topic-levels ({max})")]
    TooManyLevels { levels: usize, max: usize },
}

impl TopicLimitExceeded {
    /// Adds `count` topics over this limit to the broker's counters.
    pub fn count(self, stats: &Stats, count: u64) {
        match self {
            TopicLimitExceeded::TooLong { .. } => stats.topics_too_long(count),
            TopicLimitExceeded::TooManyLevels { .. } => stats.topic_levels_exceeded(count),
        }
    }
}

impl TopicLimits {
    /// `max_length` in bytes, `max_levels` in `/`-separated levels (both at least 1, as the
    /// configuration ensures).
    pub fn new(max_length: usize, max_levels: usize) -> Self {
        TopicLimits { max_length, max_levels }
    }

    /// Checks a topic name or filter against both limits.
    #[inline]
    pub fn check(&self, topic: &str) -> Result<(), TopicLimitExceeded> {
        let len = topic.len();
        if len > self.max_length {
            return Err(TopicLimitExceeded::TooLong { len, max: self.max_length });
        }
        // `len` bytes hold at most `len` separators, so at most `len + 1` levels: a topic
        // shorter than the level limit cannot exceed it, and most topics are.
        if len >= self.max_levels {
            let levels = levels(topic.as_bytes());
            if levels > self.max_levels {
                return Err(TopicLimitExceeded::TooManyLevels { levels, max: self.max_levels });
            }
        }
        Ok(())
    }
}

/// Levels of a topic: one more than its separators. A plain byte count, which the compiler
/// turns into a vectorised loop.
fn levels(topic: &[u8]) -> usize {
    1 + topic.iter().filter(|&&byte| byte == b'/').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_limit_is_inclusive() {
        let limits = TopicLimits::new(5, 128);
        assert_eq!(limits.check("a/b/c"), Ok(()));
        assert_eq!(limits.check("a/b/cd"), Err(TopicLimitExceeded::TooLong { len: 6, max: 5 }));
        // Bytes, not characters.
        assert_eq!(limits.check("ééé"), Err(TopicLimitExceeded::TooLong { len: 6, max: 5 }));
    }

    #[test]
    fn level_limit_counts_empty_levels_too() {
        let limits = TopicLimits::new(65535, 3);
        for ok in ["a", "a/b/c", "//", "+/+/#", "/a/"] {
            assert_eq!(limits.check(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(limits.check("///"), Err(TopicLimitExceeded::TooManyLevels { levels: 4, max: 3 }));
        assert_eq!(limits.check("a/b/c/#"), Err(TopicLimitExceeded::TooManyLevels { levels: 4, max: 3 }));
    }

    #[test]
    fn defaults_accept_the_longest_topic_and_128_levels() {
        let limits = TopicLimits::new(65535, 128);
        assert_eq!(limits.check(&"x".repeat(65535)), Ok(()));
        let deepest = vec!["l"; 128].join("/");
        assert_eq!(limits.check(&deepest), Ok(()));
        assert_eq!(
            limits.check(&format!("{deepest}/l")),
            Err(TopicLimitExceeded::TooManyLevels { levels: 129, max: 128 })
        );
        // Long but flat: only its length matters.
        assert_eq!(limits.check(&format!("{}/{}", "a".repeat(30000), "b".repeat(30000))), Ok(()));
    }

    #[test]
    fn exceeded_limits_reach_their_own_counters() {
        let stats = Stats::default();
        TopicLimitExceeded::TooLong { len: 9, max: 8 }.count(&stats, 2);
        TopicLimitExceeded::TooManyLevels { levels: 9, max: 8 }.count(&stats, 3);
        let s = stats.snapshot();
        assert_eq!((s.topics_too_long, s.topic_levels_exceeded), (2, 3));
    }
}
