//! Topic names, topic filters and how they match (MQTT 3.1.1 section 4.7).
//!
//! These are plain `&str` functions so the decoder, the router and the plugins share one
//! definition of what a valid topic is and what a filter matches.

use thiserror::Error;

/// Longest topic name or filter: the length prefix of an MQTT string is 16 bits.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Why a topic name or topic filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Topic names and filters must be at least one character long.
    #[error("topic is empty [MQTT-4.7.3-1]")]
    Empty,
    /// More bytes than a 16-bit length prefix can describe.
    #[error("topic is {0} bytes long, the maximum is 65535")]
    TooLong(usize),
    /// U+0000 is not allowed anywhere in a topic.
    #[error("topic contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter,
    /// `+` or `#` in a topic name (as opposed to a filter).
    #[error("topic name contains a wildcard character [MQTT-3.3.2-2]")]
    WildcardInName,
    /// `#` anywhere but as the whole last level of a filter.
    #[error("'#' must be the whole last level of a topic filter [MQTT-4.7.1-2]")]
    MisplacedMultiLevelWildcard,
    /// `+` sharing a level with other characters.
    #[error("'+' must occupy a whole level of a topic filter [MQTT-4.7.1-3]")]
    MisplacedSingleLevelWildcard,
}

/// The checks shared by names and filters: length and U+0000.
fn validate_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(topic.len()));
    }
    if topic.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name, the topic a message is published to: non-empty, at most 65535 bytes,
/// no U+0000 and no wildcard characters.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    validate_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter, what a client subscribes to: like a name, but `+` may fill a whole
/// level and `#` may fill the whole last level.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Does `topic` (a valid topic name) match `filter` (a valid filter)? Per MQTT 3.1.1 4.7:
/// `sport/#` matches `sport`, `+` matches an empty level, and a filter starting with `#` or `+`
/// does not match a topic starting with `$` [MQTT-4.7.2-1].
///
/// Invalid inputs give an answer but not a meaningful one; validate them first.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['#', '+']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` matches the parent level too, so it does not need a topic level.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topic_names() {
        for name in ["a", "/", "//", "sport/tennis/player1", "$SYS/broker", " ", "ü/€"] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
        assert_eq!(validate_topic_name(&"a".repeat(65535)), Ok(()));
    }

    #[test]
    fn invalid_topic_names() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a#b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name(&"a".repeat(65536)), Err(TopicError::TooLong(65536)));
    }

    #[test]
    fn valid_topic_filters() {
        for filter in
            ["#", "+", "/", "sport/#", "sport/tennis/+", "+/+", "+/tennis/#", "/+", "$SYS/#", "sport/+/player1"]
        {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn invalid_topic_filters() {
        use TopicError::*;
        assert_eq!(validate_topic_filter(""), Err(Empty));
        assert_eq!(validate_topic_filter("a/\0"), Err(NullCharacter));
        assert_eq!(validate_topic_filter("sport/tennis#"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("sport/#/ranking"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("#/"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("##"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(validate_topic_filter("sport+"), Err(MisplacedSingleLevelWildcard));
        assert_eq!(validate_topic_filter("+a/b"), Err(MisplacedSingleLevelWildcard));
        assert_eq!(validate_topic_filter("++"), Err(MisplacedSingleLevelWildcard));
        assert_eq!(validate_topic_filter(&"a".repeat(65536)), Err(TooLong(65536)));
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        assert!(topic_matches("sport/#", "sport"));
        assert!(topic_matches("sport/#", "sport/"));
        assert!(topic_matches("sport/#", "sport/tennis"));
        assert!(topic_matches("sport/#", "sport/tennis/player1/ranking"));
        assert!(topic_matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(!topic_matches("sport/#", "sports"));
        assert!(!topic_matches("sport/#", "other/sport"));
        assert!(topic_matches("#", "a/b/c"));
        assert!(topic_matches("#", "/"));
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_level() {
        assert!(topic_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!topic_matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!topic_matches("sport/tennis/+", "sport/tennis"));
        assert!(topic_matches("sport/+", "sport/"));
        assert!(!topic_matches("sport/+", "sport"));
        assert!(topic_matches("+", "finance"));
        assert!(!topic_matches("+", "/finance"));
        assert!(topic_matches("+/+", "/finance"));
        assert!(topic_matches("/+", "/finance"));
        assert!(topic_matches("+/tennis/#", "sport/tennis/player1"));
    }

    #[test]
    fn literal_filters_match_exactly() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(!topic_matches("a/b", "A/b"));
        assert!(!topic_matches("a/b", "a/b/"));
    }

    #[test]
    fn dollar_topics_are_hidden_from_leading_wildcards() {
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(!topic_matches("+", "$SYS"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(topic_matches("$SYS/+", "$SYS/x"));
        assert!(topic_matches("$SYS/x", "$SYS/x"));
        // Only the first character counts: `$` further in is an ordinary character.
        assert!(topic_matches("+/$x", "a/$x"));
        assert!(topic_matches("a/#", "a/$x"));
    }
}
