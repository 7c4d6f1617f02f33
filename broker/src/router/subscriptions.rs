//! The subscription tree: topic filters of every client, matched against the topic of each
//! published message.
//!
//! One node per filter level, with `+` and `#` kept beside the literal children so a match walks
//! only the branches that can match: cost grows with the depth of the topic, not with the number
//! of subscriptions. Subscribers are stored as client slots (small integers owned by the router),
//! so a match allocates nothing.

use std::collections::HashMap;

use amqtt_protocol::QoS;

/// A client's slot in the router's client table.
pub type Slot = u32;

/// One client's subscription at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    pub slot: Slot,
    pub qos: QoS,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Subscribers of the filter that ends exactly at this node.
    exact: Vec<Subscriber>,
    /// Subscribers of `<this node>/#`, which also match this node itself.
    multi: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.exact.is_empty() && self.multi.is_empty()
    }
}

/// Filters of all clients. Filters must already be valid (the codec checks them).
#[derive(Debug, Default)]
pub struct SubscriptionTree {
    root: Node,
    /// Subscriptions held, one per client and filter (for `$SYS/broker/messages/subscriptions/count`).
    len: usize,
}

impl SubscriptionTree {
    /// Subscriptions held, one per client and filter.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds or replaces `slot`'s subscription to `filter`. Returns true if it replaced one.
    pub fn insert(&mut self, filter: &str, slot: Slot, qos: QoS) -> bool {
        let replaced = self.insert_at(filter, slot, qos);
        if !replaced {
            self.len += 1;
        }
        replaced
    }

    fn insert_at(&mut self, filter: &str, slot: Slot, qos: QoS) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            if level == "#" {
                return upsert(&mut node.multi, slot, qos);
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Default::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        upsert(&mut node.exact, slot, qos)
    }

    /// Removes `slot`'s subscription to `filter`; returns whether there was one. Empty branches
    /// are pruned so the tree does not keep the shape of every filter ever used.
    pub fn remove(&mut self, filter: &str, slot: Slot) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, slot);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every subscription matching `topic` to `out` (a client may appear more than once
    /// when several of its filters match). Topics starting with `$` are not matched by filters
    /// starting with a wildcard [MQTT-4.7.2-1].
    pub fn matches(&self, topic: &str, out: &mut Vec<Subscriber>) {
        let (first, rest) = split_level(topic);
        let root = &self.root;
        if let Some(child) = root.children.get(first) {
            collect(child, rest, out);
        }
        if !first.starts_with('$') {
            out.extend_from_slice(&root.multi);
            if let Some(plus) = &root.plus {
                collect(plus, rest, out);
            }
        }
    }
}

/// Splits off the first level; `None` as the rest means the topic has no more levels.
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

fn collect(node: &Node, rest: Option<&str>, out: &mut Vec<Subscriber>) {
    // `a/#` matches `a` itself as well as everything below it [MQTT-4.7.1-2].
    out.extend_from_slice(&node.multi);
    let Some(rest) = rest else {
        out.extend_from_slice(&node.exact);
        return;
    };
    let (level, rest) = split_level(rest);
    if let Some(child) = node.children.get(level) {
        collect(child, rest, out);
    }
    if let Some(plus) = &node.plus {
        collect(plus, rest, out);
    }
}

fn upsert(subscribers: &mut Vec<Subscriber>, slot: Slot, qos: QoS) -> bool {
    match subscribers.iter_mut().find(|s| s.slot == slot) {
        Some(existing) => {
            existing.qos = qos;
            true
        }
        None => {
            subscribers.push(Subscriber { slot, qos });
            false
        }
    }
}

fn remove_from(subscribers: &mut Vec<Subscriber>, slot: Slot) -> bool {
    let before = subscribers.len();
    subscribers.retain(|s| s.slot != slot);
    subscribers.len() != before
}

fn remove_at(node: &mut Node, levels: &[&str], slot: Slot) -> bool {
    let Some((&level, rest)) = levels.split_first() else {
        return remove_from(&mut node.exact, slot);
    };
    if level == "#" {
        return remove_from(&mut node.multi, slot);
    }
    if level == "+" {
        let Some(plus) = node.plus.as_deref_mut() else {
            return false;
        };
        let removed = remove_at(plus, rest, slot);
        if plus.is_empty() {
            node.plus = None;
        }
        return removed;
    }
    let Some(child) = node.children.get_mut(level) else {
        return false;
    };
    let removed = remove_at(child, rest, slot);
    if child.is_empty() {
        node.children.remove(level);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(tree: &SubscriptionTree, topic: &str) -> Vec<(Slot, QoS)> {
        let mut out = Vec::new();
        tree.matches(topic, &mut out);
        let mut v: Vec<_> = out.into_iter().map(|s| (s.slot, s.qos)).collect();
        v.sort();
        v
    }

    #[test]
    fn literal_plus_and_hash() {
        let mut t = SubscriptionTree::default();
        t.insert("sport/tennis/player1", 1, QoS::AtMostOnce);
        t.insert("sport/+/player1", 2, QoS::AtLeastOnce);
        t.insert("sport/#", 3, QoS::ExactlyOnce);
        t.insert("#", 4, QoS::AtMostOnce);
        t.insert("+/+", 5, QoS::AtMostOnce);
        assert_eq!(
            matched(&t, "sport/tennis/player1"),
            vec![(1, QoS::AtMostOnce), (2, QoS::AtLeastOnce), (3, QoS::ExactlyOnce), (4, QoS::AtMostOnce)]
        );
        // `sport/#` also matches the parent level.
        assert_eq!(matched(&t, "sport"), vec![(3, QoS::ExactlyOnce), (4, QoS::AtMostOnce)]);
        assert_eq!(matched(&t, "/finance"), vec![(4, QoS::AtMostOnce), (5, QoS::AtMostOnce)]);
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        let mut t = SubscriptionTree::default();
        t.insert("#", 1, QoS::AtMostOnce);
        t.insert("+/monitor/Clients", 2, QoS::AtMostOnce);
        t.insert("$SYS/#", 3, QoS::AtMostOnce);
        t.insert("$SYS/monitor/+", 4, QoS::AtMostOnce);
        assert_eq!(matched(&t, "$SYS/monitor/Clients"), vec![(3, QoS::AtMostOnce), (4, QoS::AtMostOnce)]);
        assert_eq!(matched(&t, "x/monitor/Clients"), vec![(1, QoS::AtMostOnce), (2, QoS::AtMostOnce)]);
    }

    #[test]
    fn replace_and_remove_prune_the_tree() {
        let mut t = SubscriptionTree::default();
        assert!(!t.insert("a/+/c", 1, QoS::AtMostOnce));
        assert!(t.insert("a/+/c", 1, QoS::ExactlyOnce));
        assert_eq!(matched(&t, "a/b/c"), vec![(1, QoS::ExactlyOnce)]);
        assert_eq!(t.len(), 1, "a replaced subscription is still one");
        assert!(t.remove("a/+/c", 1));
        assert!(!t.remove("a/+/c", 1));
        assert!(t.root.is_empty());
        assert_eq!(t.len(), 0);
        t.insert("a/#", 2, QoS::AtMostOnce);
        t.insert("a/#", 3, QoS::AtMostOnce);
        assert_eq!(t.len(), 2, "one per client and filter");
        assert!(t.remove("a/#", 2));
        assert!(t.remove("a/#", 3));
        assert!(t.root.is_empty());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn empty_levels_are_levels() {
        let mut t = SubscriptionTree::default();
        t.insert("a//b", 1, QoS::AtMostOnce);
        t.insert("a/+/b", 2, QoS::AtMostOnce);
        assert_eq!(matched(&t, "a//b"), vec![(1, QoS::AtMostOnce), (2, QoS::AtMostOnce)]);
        assert_eq!(matched(&t, "a/b"), vec![]);
    }
}
