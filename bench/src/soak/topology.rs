//! Who talks to whom in the soak: the publishers (QoS, persistent session or not), the
//! subscribers (filter, QoS, persistent session or not), and which message reaches which
//! subscriber at which QoS — what the ledger checks deliveries against.
//!
//! Publisher `i` sends its message `seq` to `ROOT/i/(seq % SUBTOPICS)`; filters are relative to
//! `ROOT`, which holds the bench's process id so that two runs never share topics. Each
//! persistent subscriber has one filter, so a message matches it at most once: overlapping
//! filters of one client may legitimately deliver a message once per filter, which the
//! exactly-once check would then mistake for a duplicate.

use amqtt_protocol::{topic_matches, QoS};

/// Subtopics each publisher cycles through.
pub const SUBTOPICS: u64 = 4;

#[derive(Debug, Clone, Copy)]
pub struct PublisherSpec {
    pub qos: QoS,
    /// Clean session 0: after a kill, the publisher resends its unacknowledged PUBLISHes (DUP)
    /// and PUBRELs on the resumed session. Clean publishers abandon them.
    pub persistent: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct SubscriberSpec {
    /// Relative to the run's root.
    pub filter: &'static str,
    pub qos: QoS,
    /// Clean session 0, subscribed once: what the loss check is about.
    pub persistent: bool,
}

const fn publisher(qos: QoS, persistent: bool) -> PublisherSpec {
    PublisherSpec { qos, persistent }
}

const fn subscriber(filter: &'static str, qos: QoS, persistent: bool) -> SubscriberSpec {
    SubscriberSpec { filter, qos, persistent }
}

pub const PUBLISHERS: [PublisherSpec; 6] = [
    publisher(QoS::AtMostOnce, false),
    publisher(QoS::AtLeastOnce, false),
    publisher(QoS::ExactlyOnce, false),
    publisher(QoS::AtLeastOnce, true),
    publisher(QoS::ExactlyOnce, true),
    publisher(QoS::ExactlyOnce, false),
];

/// Persistent ones first: their index is their place in the ledger.
pub const SUBSCRIBERS: [SubscriberSpec; 8] = [
    subscriber("#", QoS::ExactlyOnce, true),
    subscriber("+/0", QoS::AtLeastOnce, true),
    subscriber("+/1", QoS::ExactlyOnce, true),
    subscriber("4/#", QoS::ExactlyOnce, true),
    subscriber("2/+", QoS::AtLeastOnce, true),
    subscriber("#", QoS::AtMostOnce, false),
    subscriber("+/2", QoS::AtLeastOnce, false),
    subscriber("1/+", QoS::ExactlyOnce, false),
];

#[derive(Debug, Clone)]
pub struct Topology {
    pub root: String,
    pub publishers: Vec<PublisherSpec>,
    pub subscribers: Vec<SubscriberSpec>,
    /// `[subscriber][publisher][subtopic]`: the QoS of the delivery, if the topic matches.
    delivery: Vec<Vec<Vec<Option<QoS>>>>,
}

impl Topology {
    pub fn new(root: String, publishers: &[PublisherSpec], subscribers: &[SubscriberSpec]) -> Topology {
        let delivery = subscribers
            .iter()
            .map(|s| {
                publishers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        (0..SUBTOPICS)
                            .map(|k| topic_matches(s.filter, &format!("{i}/{k}")).then(|| p.qos.min(s.qos)))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Topology { root, publishers: publishers.to_vec(), subscribers: subscribers.to_vec(), delivery }
    }

    pub fn standard(root: String) -> Topology {
        Topology::new(root, &PUBLISHERS, &SUBSCRIBERS)
    }

    /// The topics of publisher `index`, by subtopic.
    pub fn topics(&self, index: usize) -> Vec<String> {
        (0..SUBTOPICS).map(|k| format!("{}/{index}/{k}", self.root)).collect()
    }

    pub fn filter(&self, subscriber: usize) -> String {
        format!("{}/{}", self.root, self.subscribers[subscriber].filter)
    }

    /// The QoS at which message `seq` of `publisher` reaches `subscriber`, if it does: the
    /// lower of the publish and subscription QoS [MQTT-3.8.4-6].
    pub fn delivery_qos(&self, subscriber: usize, publisher: usize, seq: u64) -> Option<QoS> {
        self.delivery[subscriber][publisher][(seq % SUBTOPICS) as usize]
    }

    /// Persistent subscribers come first: `0..persistent_count()`.
    pub fn persistent_count(&self) -> usize {
        self.subscribers.iter().take_while(|s| s.persistent).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_follow_filters_and_the_lower_qos() {
        let t = Topology::standard("soak/1".into());
        assert_eq!(t.topics(2)[1], "soak/1/2/1");
        assert_eq!(t.filter(1), "soak/1/+/0");
        // "#" at QoS 2 gets everything at the publisher's QoS.
        assert_eq!(t.delivery_qos(0, 0, 5), Some(QoS::AtMostOnce));
        assert_eq!(t.delivery_qos(0, 4, 5), Some(QoS::ExactlyOnce));
        // "+/0" at QoS 1: subtopic 0 only, QoS 2 downgraded.
        assert_eq!(t.delivery_qos(1, 2, 4), Some(QoS::AtLeastOnce));
        assert_eq!(t.delivery_qos(1, 2, 5), None);
        // "4/#": publisher 4 only.
        assert_eq!(t.delivery_qos(3, 4, 7), Some(QoS::ExactlyOnce));
        assert_eq!(t.delivery_qos(3, 3, 7), None);
        assert_eq!(t.persistent_count(), 5);
    }
}
