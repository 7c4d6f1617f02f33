//! Retained messages: the last retained PUBLISH of each topic, found again by the filters of
//! later subscriptions.
//!
//! Stored as a tree of topic levels so that a subscription walks only the branches its filter
//! can match instead of testing every retained topic.

use std::collections::HashMap;

use amqtt_protocol::Publish;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Publish>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }

    fn collect_all(&self, out: &mut Vec<Publish>) {
        out.extend(self.message.iter().cloned());
        for child in self.children.values() {
            child.collect_all(out);
        }
    }
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    root: Node,
    count: usize,
}

impl RetainedStore {
    /// Number of retained messages held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Stores `message` as the retained message of its topic, or clears the topic's retained
    /// message when the payload is empty [MQTT-3.3.1-10, MQTT-3.3.1-11].
    pub fn set(&mut self, message: Publish) {
        if message.payload.is_empty() {
            let levels: Vec<&str> = message.topic.split('/').collect();
            if remove_at(&mut self.root, &levels) {
                self.count -= 1;
            }
            return;
        }
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.message.replace(message).is_none() {
            self.count += 1;
        }
    }

    /// Appends every retained message whose topic matches `filter` to `out`.
    pub fn matching(&self, filter: &str, out: &mut Vec<Publish>) {
        collect(&self.root, filter, true, out);
    }
}

fn collect(node: &Node, filter: &str, at_root: bool, out: &mut Vec<Publish>) {
    let (level, rest) = match filter.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (filter, None),
    };
    // A leading wildcard does not match topics that start with `$` [MQTT-4.7.2-1].
    let visible = |name: &str| !(at_root && name.starts_with('$'));
    match level {
        "#" => {
            // `a/#` matches `a` itself too [MQTT-4.7.1-2].
            if !at_root {
                out.extend(node.message.iter().cloned());
            }
            for (name, child) in &node.children {
                if visible(name) {
                    child.collect_all(out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if visible(name) {
                    descend(child, rest, out);
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                descend(child, rest, out);
            }
        }
    }
}

fn descend(node: &Node, rest: Option<&str>, out: &mut Vec<Publish>) {
    match rest {
        None => out.extend(node.message.iter().cloned()),
        Some(rest) => collect(node, rest, false, out),
    }
}

fn remove_at(node: &mut Node, levels: &[&str]) -> bool {
    let Some((&level, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(level) else {
        return false;
    };
    let removed = remove_at(child, rest);
    if child.is_empty() {
        node.children.remove(level);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqtt_protocol::{ByteString, QoS};
    use bytes::Bytes;

    fn msg(topic: &'static str, payload: &'static str) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: ByteString::from_static(topic),
            pkid: 0,
            payload: Bytes::from_static(payload.as_bytes()),
        }
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, &mut out);
        let mut v: Vec<String> =
            out.iter().map(|p| format!("{}={}", p.topic, std::str::from_utf8(&p.payload).unwrap())).collect();
        v.sort();
        v
    }

    #[test]
    fn set_replace_clear() {
        let mut s = RetainedStore::default();
        s.set(msg("a/b", "1"));
        s.set(msg("a/b", "2"));
        s.set(msg("a", "0"));
        assert_eq!(s.len(), 2);
        assert_eq!(topics(&s, "a/b"), vec!["a/b=2"]);
        s.set(msg("a/b", ""));
        assert_eq!(s.len(), 1);
        assert_eq!(topics(&s, "#"), vec!["a=0"]);
        s.set(msg("a", ""));
        assert!(s.root.is_empty());
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut s = RetainedStore::default();
        for t in ["sport", "sport/tennis", "sport/tennis/p1", "$SYS/uptime", "x//y"] {
            s.set(msg(t, "v"));
        }
        assert_eq!(topics(&s, "sport/#"), vec!["sport/tennis/p1=v", "sport/tennis=v", "sport=v"]);
        assert_eq!(topics(&s, "sport/+"), vec!["sport/tennis=v"]);
        assert_eq!(topics(&s, "+"), vec!["sport=v"]);
        assert_eq!(topics(&s, "#").len(), 4);
        assert_eq!(topics(&s, "$SYS/#"), vec!["$SYS/uptime=v"]);
        assert_eq!(topics(&s, "+/uptime"), Vec::<String>::new());
        assert_eq!(topics(&s, "x/+/y"), vec!["x//y=v"]);
    }
}
