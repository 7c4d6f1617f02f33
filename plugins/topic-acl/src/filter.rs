//! One ACL topic filter, split into levels once when the plugin is built, and the rule that
//! decides whether it covers what a client asks for.
//!
//! aMQTT compares the requested topic (or, for SUBSCRIBE, the requested filter) with each ACL
//! filter level by level: `#` in the ACL ends the comparison with a match, `+` matches any one
//! level, anything else must be equal. This is the same comparison, with the corners aMQTT gets
//! wrong put right, so that an ACL filter covers a request exactly when every topic the request
//! can reach is one the ACL filter matches:
//!
//! - `+` in the ACL does not cover `#` in a requested filter (`sensors/+` does not grant
//!   `sensors/#`, which reaches `sensors/a/b`); aMQTT grants it.
//! - `#` also covers its parent level (`sensors/#` covers `sensors`), as `#` matches it in MQTT
//!   [MQTT-4.7.1-2]; aMQTT refuses it.
//! - A topic starting with `$` is covered only by an ACL filter whose first level starts with
//!   `$` literally: a leading `#` or `+` does not reach `$SYS/...` [MQTT-4.7.2-1]; aMQTT's `#`
//!   grants everything.
//!
//! `%u` and `%c` inside a level (mosquitto's pattern ACLs) stand for the client's username and
//! client id. A value that contains `+`, `#` or `/` is not substituted: the filter then matches
//! nothing, so a client cannot widen its rights by choosing such a name. A client without a
//! username matches no filter that contains `%u`.

/// Why an ACL filter cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("an empty topic filter matches nothing; remove it or write a topic")]
    Empty,
    #[error("`#` must be alone in the last level (write `sensors/#`, not `sensors#` or `#/x`)")]
    MisplacedHash,
    #[error("`+` must be alone in its level (write `sensors/+/temp`, not `sensors+/temp`)")]
    MisplacedPlus,
}

/// Who is asking, as far as `%u` and `%c` care.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// An ACL topic filter, ready to be compared without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    levels: Box<[Level]>,
    /// The first level starts with a literal `$`: only such a filter reaches `$` topics.
    dollar: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must equal the requested level.
    Text(Box<str>),
    /// Any one level, but not a requested `#`.
    Plus,
    /// This level and every one below, or none (the parent).
    Hash,
    /// A level with `%u` or `%c` in it.
    Pattern(Box<[Piece]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Username,
    ClientId,
}

impl AclFilter {
    /// Splits `filter` into levels, checking the wildcards are where MQTT allows them
    /// [MQTT-4.7.1-2] [MQTT-4.7.1-3].
    pub fn parse(filter: &str) -> Result<AclFilter, FilterError> {
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        let count = filter.split('/').count();
        let mut levels = Vec::with_capacity(count);
        for (index, level) in filter.split('/').enumerate() {
            levels.push(match level {
                "#" if index + 1 == count => Level::Hash,
                "+" => Level::Plus,
                _ if level.contains('#') => return Err(FilterError::MisplacedHash),
                _ if level.contains('+') => return Err(FilterError::MisplacedPlus),
                _ if level.contains("%u") || level.contains("%c") => Level::Pattern(pieces(level)),
                _ => Level::Text(level.into()),
            });
        }
        Ok(AclFilter { levels: levels.into_boxed_slice(), dollar: filter.starts_with('$') })
    }

    /// Whether this ACL filter covers `requested`: a topic name (publish, receive) or a topic
    /// filter (subscribe), asked for by `who`.
    pub fn covers(&self, requested: &str, who: Who<'_>) -> bool {
        if requested.starts_with('$') && !self.dollar {
            return false;
        }
        let mut requested = requested.split('/');
        for level in self.levels.iter() {
            let matches = match (level, requested.next()) {
                // This level and all below, or none: `a/#` covers `a` [MQTT-4.7.1-2].
                (Level::Hash, _) => return true,
                (_, None) => return false,
                (Level::Text(text), Some(asked)) => **text == *asked,
                (Level::Plus, Some(asked)) => asked != "#",
                (Level::Pattern(pieces), Some(asked)) => pattern_matches(pieces, asked, who),
            };
            if !matches {
                return false;
            }
        }
        requested.next().is_none()
    }
}

/// `level` cut at each `%u` and `%c`.
fn pieces(level: &str) -> Box<[Piece]> {
    let mut pieces = Vec::new();
    let mut rest = level;
    while let Some(at) = rest.find("%u").into_iter().chain(rest.find("%c")).min() {
        if at > 0 {
            pieces.push(Piece::Text(rest[..at].into()));
        }
        pieces.push(if rest[at..].starts_with("%u") { Piece::Username } else { Piece::ClientId });
        rest = &rest[at + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.into()));
    }
    pieces.into_boxed_slice()
}

/// Whether one requested level is exactly the pattern with `who`'s values put in.
fn pattern_matches(pieces: &[Piece], asked: &str, who: Who<'_>) -> bool {
    let mut rest = asked;
    for piece in pieces {
        let part = match piece {
            Piece::Text(text) => &**text,
            Piece::Username => match who.username {
                Some(username) if substitutable(username) => username,
                _ => return false,
            },
            Piece::ClientId if substitutable(who.client_id) => who.client_id,
            Piece::ClientId => return false,
        };
        match rest.strip_prefix(part) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// A value that cannot change the shape of the filter it is put into.
fn substitutable(value: &str) -> bool {
    !value.contains(['+', '#', '/'])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Who<'static> = Who { username: Some("alice"), client_id: "dev1" };
    const ANONYMOUS: Who<'static> = Who { username: None, client_id: "dev1" };

    fn covers(acl: &str, requested: &str, who: Who<'_>) -> bool {
        AclFilter::parse(acl).unwrap().covers(requested, who)
    }

    #[test]
    fn topic_names() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/b", "a", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("+/+", "/b", true),
            ("a/#", "a/b/c", true),
            ("a/#", "a", true),
            ("a/#", "b/a", false),
            ("#", "anything/at/all", true),
            ("+/b/#", "x/b", true),
            ("+/b/#", "x/c", false),
            ("a//b", "a//b", true),
            ("a//b", "a/b", false),
            ("/a", "/a", true),
            ("/a", "a", false),
        ];
        for (acl, topic, expected) in cases {
            assert_eq!(covers(acl, topic, ALICE), expected, "ACL {acl:?} over topic {topic:?}");
        }
    }

    #[test]
    fn filters_over_filters() {
        let cases = [
            ("sensors/#", "sensors/+/temp", true),
            ("sensors/#", "sensors/#", true),
            ("sensors/#", "sensors", true),
            ("sensors/#", "#", false),
            ("sensors/+", "sensors/#", false),
            ("sensors/+", "sensors/+", true),
            ("sensors/+", "sensors/x", true),
            ("sensors/+/temp", "sensors/+/temp", true),
            ("sensors/+/temp", "sensors/+/#", false),
            ("sensors/x/temp", "sensors/+/temp", false),
            ("sensors/+/#", "sensors/+", true),
            ("sensors/+/#", "sensors/#", false),
            ("#", "#", true),
            ("#", "+/a", true),
            ("+", "+", true),
            ("+", "#", false),
            ("a/b", "a/+", false),
        ];
        for (acl, filter, expected) in cases {
            assert_eq!(covers(acl, filter, ALICE), expected, "ACL {acl:?} over filter {filter:?}");
        }
    }

    #[test]
    fn dollar_topics_need_an_explicit_dollar() {
        let cases = [
            ("#", "$SYS/broker/uptime", false),
            ("+/broker/uptime", "$SYS/broker/uptime", false),
            ("+/#", "$SYS", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
            ("$SYS/#", "$SYS/#", true),
            ("$SYS/+/uptime", "$SYS/broker/uptime", true),
            ("$SYS/#", "#", false),
            ("#", "#", true),
            ("%u/#", "$SYS/broker", false),
        ];
        for (acl, requested, expected) in cases {
            let who = Who { username: Some("$SYS"), client_id: "dev1" };
            assert_eq!(covers(acl, requested, who), expected, "ACL {acl:?} over {requested:?}");
        }
    }

    #[test]
    fn username_and_client_id_patterns() {
        let cases = [
            ("users/%u/#", "users/alice/inbox", ALICE, true),
            ("users/%u/#", "users/alice", ALICE, true),
            ("users/%u/#", "users/bob/inbox", ALICE, false),
            ("users/%u/#", "users/+/inbox", ALICE, false),
            ("users/%u/#", "users/#", ALICE, false),
            ("users/%u/#", "users/alice/inbox", ANONYMOUS, false),
            ("devices/%c", "devices/dev1", ALICE, true),
            ("devices/%c", "devices/dev1", ANONYMOUS, true),
            ("devices/%c", "devices/dev2", ALICE, false),
            ("devices/%c", "devices/dev1x", ALICE, false),
            ("x/%u-%c/y", "x/alice-dev1/y", ALICE, true),
            ("x/%u-%c/y", "x/alice-dev2/y", ALICE, false),
            ("x/%u%c", "x/alicedev1", ALICE, true),
            ("x/pre%usuf", "x/prealicesuf", ALICE, true),
            ("x/pre%usuf", "x/prealice", ALICE, false),
            ("%x/%", "%x/%", ALICE, true),
        ];
        for (acl, requested, who, expected) in cases {
            assert_eq!(covers(acl, requested, who), expected, "ACL {acl:?} over {requested:?} for {who:?}");
        }
    }

    #[test]
    fn values_with_wildcards_or_separators_match_nothing() {
        for username in ["+", "#", "a/b", "a+", "x#"] {
            let who = Who { username: Some(username), client_id: "dev1" };
            for requested in [username, "+", "#", "a/b", "a"] {
                let topic = format!("users/{requested}");
                assert!(!covers("users/%u", &topic, who), "username {username:?} over {topic:?}");
            }
            let who = Who { username: Some("alice"), client_id: username };
            let topic = format!("devices/{username}");
            assert!(!covers("devices/%c", &topic, who), "client id {username:?} over {topic:?}");
        }
    }

    #[test]
    fn malformed_filters_are_refused() {
        assert_eq!(AclFilter::parse(""), Err(FilterError::Empty));
        assert_eq!(AclFilter::parse("a/#/b"), Err(FilterError::MisplacedHash));
        assert_eq!(AclFilter::parse("a#"), Err(FilterError::MisplacedHash));
        assert_eq!(AclFilter::parse("a/b+"), Err(FilterError::MisplacedPlus));
        assert_eq!(AclFilter::parse("+a/b"), Err(FilterError::MisplacedPlus));
        for good in ["#", "+", "/", "a/+/#", "%u", "a/%c/#", "$SYS/#"] {
            assert!(AclFilter::parse(good).is_ok(), "{good:?}");
        }
    }
}
