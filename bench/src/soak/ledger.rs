//! The soak's books: which messages the broker acknowledged to their publishers (PUBACK for
//! QoS 1, PUBREC for QoS 2: from then on the broker owns the message), and how many times each
//! persistent subscriber received each message. The verdict compares the two: an acknowledged
//! QoS 1/2 message that matches a persistent subscriber's filter must reach it at least once,
//! and exactly once when both sides are QoS 2.
//!
//! Messages are identified by (publisher, sequence number), carried in every payload. Books are
//! kept per publisher and per subscriber behind a plain mutex, taken once per batch of
//! acknowledgements or deliveries and never across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use amqtt_protocol::QoS;

use super::topology::Topology;

/// How many lost or duplicated messages the verdict names.
const EXAMPLES: usize = 10;

#[derive(Debug)]
pub struct Ledger {
    /// Per publisher: a bitset of acknowledged sequence numbers.
    acked: Vec<Mutex<Vec<u64>>>,
    /// Per persistent subscriber, per publisher: deliveries of each sequence number (saturating).
    received: Vec<Mutex<Vec<Vec<u8>>>>,
    /// Per persistent subscriber: deliveries so far, for progress reports.
    delivered: Vec<AtomicU64>,
}

/// What the books say at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// (acknowledged QoS 1/2 message, persistent subscriber it matches at QoS 1 or 2) pairs.
    pub owed: u64,
    /// Of those, the ones never delivered.
    pub lost: u64,
    /// `lost` by persistent subscriber.
    pub lost_by_subscriber: Vec<u64>,
    /// Extra deliveries of messages owed at QoS 2 (must be 0).
    pub qos2_duplicates: u64,
    /// Extra deliveries of messages owed at QoS 1 (allowed: at least once).
    pub qos1_duplicates: u64,
    /// The first few lost or duplicated: `subscriber/publisher/seq: what`.
    pub examples: Vec<String>,
}

impl Ledger {
    pub fn new(publishers: usize, persistent_subscribers: usize) -> Ledger {
        Ledger {
            acked: (0..publishers).map(|_| Mutex::new(Vec::new())).collect(),
            received: (0..persistent_subscribers).map(|_| Mutex::new(vec![Vec::new(); publishers])).collect(),
            delivered: (0..persistent_subscribers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The broker acknowledged these messages of `publisher`.
    pub fn acknowledged(&self, publisher: usize, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let mut bits = self.acked[publisher].lock().unwrap_or_else(|e| e.into_inner());
        for &seq in seqs {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if bits.len() <= word {
                bits.resize(word + 1, 0);
            }
            bits[word] |= 1 << bit;
        }
    }

    /// Persistent subscriber `subscriber` received these (publisher, seq) messages.
    pub fn delivered(&self, subscriber: usize, messages: &[(usize, u64)]) {
        if messages.is_empty() {
            return;
        }
        self.delivered[subscriber].fetch_add(messages.len() as u64, Ordering::Relaxed);
        let mut books = self.received[subscriber].lock().unwrap_or_else(|e| e.into_inner());
        for &(publisher, seq) in messages {
            let Some(counts) = books.get_mut(publisher) else { continue };
            let seq = seq as usize;
            if counts.len() <= seq {
                counts.resize(seq + 1, 0);
            }
            counts[seq] = counts[seq].saturating_add(1);
        }
    }

    /// Deliveries to each persistent subscriber so far.
    pub fn delivered_counts(&self) -> Vec<u64> {
        self.delivered.iter().map(|d| d.load(Ordering::Relaxed)).collect()
    }

    pub fn acknowledged_total(&self) -> u64 {
        self.acked
            .iter()
            .map(|bits| {
                bits.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|w| u64::from(w.count_ones())).sum::<u64>()
            })
            .sum()
    }

    /// Compares acknowledgements with deliveries.
    pub fn verdict(&self, topology: &Topology) -> Verdict {
        let mut verdict = Verdict { lost_by_subscriber: vec![0; self.received.len()], ..Verdict::default() };
        let acked: Vec<Vec<u64>> =
            self.acked.iter().map(|b| b.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
        for (subscriber, books) in self.received.iter().enumerate() {
            let books = books.lock().unwrap_or_else(|e| e.into_inner());
            for (publisher, bits) in acked.iter().enumerate() {
                let counts = &books[publisher];
                for (word_index, &word) in bits.iter().enumerate() {
                    let mut word = word;
                    while word != 0 {
                        let seq = word_index as u64 * 64 + u64::from(word.trailing_zeros());
                        word &= word - 1;
                        let Some(qos) = topology.delivery_qos(subscriber, publisher, seq) else { continue };
                        if qos == QoS::AtMostOnce {
                            continue;
                        }
                        verdict.owed += 1;
                        let count = counts.get(seq as usize).copied().unwrap_or(0);
                        let example =
                            |what: &str| format!("subscriber {subscriber}, publisher {publisher}, seq {seq}: {what}");
                        if count == 0 {
                            verdict.lost += 1;
                            verdict.lost_by_subscriber[subscriber] += 1;
                            if verdict.examples.len() < EXAMPLES {
                                verdict.examples.push(example("lost"));
                            }
                        } else if count > 1 && qos == QoS::ExactlyOnce {
                            verdict.qos2_duplicates += u64::from(count - 1);
                            if verdict.examples.len() < EXAMPLES {
                                verdict.examples.push(example(&format!("delivered {count} times at QoS 2")));
                            }
                        } else if count > 1 {
                            verdict.qos1_duplicates += u64::from(count - 1);
                        }
                    }
                }
            }
        }
        verdict
    }

    /// Owed deliveries not made yet: what the final drain waits for.
    pub fn missing(&self, topology: &Topology) -> u64 {
        self.verdict(topology).lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::topology::{PublisherSpec, SubscriberSpec};

    fn topology() -> Topology {
        let publishers = [
            PublisherSpec { qos: QoS::AtLeastOnce, persistent: false },
            PublisherSpec { qos: QoS::ExactlyOnce, persistent: false },
            PublisherSpec { qos: QoS::AtMostOnce, persistent: false },
        ];
        let subscribers = [
            SubscriberSpec { filter: "#", qos: QoS::ExactlyOnce, persistent: true },
            SubscriberSpec { filter: "+/0", qos: QoS::AtLeastOnce, persistent: true },
        ];
        Topology::new("r".into(), &publishers, &subscribers)
    }

    #[test]
    fn every_acknowledged_message_delivered_once_passes() {
        let (t, ledger) = (topology(), Ledger::new(3, 2));
        ledger.acknowledged(0, &[0, 1, 2, 3]);
        ledger.acknowledged(1, &[0, 4]);
        ledger.delivered(0, &[(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 4)]);
        ledger.delivered(1, &[(0, 0), (1, 0), (1, 4)]);
        let v = ledger.verdict(&t);
        assert_eq!(v, Verdict { owed: 9, lost_by_subscriber: vec![0, 0], ..Verdict::default() }, "{v:?}");
        assert_eq!(ledger.acknowledged_total(), 6);
    }

    #[test]
    fn an_acknowledged_message_not_delivered_is_lost() {
        let (t, ledger) = (topology(), Ledger::new(3, 2));
        ledger.acknowledged(0, &[0, 200]);
        ledger.delivered(0, &[(0, 0), (0, 200)]);
        ledger.delivered(1, &[(0, 0)]);
        // Subscriber 1 ("+/0") is owed seq 200 (subtopic 0) too.
        let v = ledger.verdict(&t);
        assert_eq!((v.owed, v.lost, &v.lost_by_subscriber[..]), (4, 1, &[0, 1][..]), "{v:?}");
        assert_eq!(v.examples, ["subscriber 1, publisher 0, seq 200: lost"]);
        assert_eq!(ledger.missing(&t), 1);
    }

    #[test]
    fn duplicates_fail_at_qos2_only() {
        let (t, ledger) = (topology(), Ledger::new(3, 2));
        ledger.acknowledged(0, &[0]);
        ledger.acknowledged(1, &[0]);
        // Subscriber 0 gets publisher 1's QoS 2 message twice; subscriber 1 gets it at QoS 1
        // (downgraded by its subscription), twice: allowed.
        ledger.delivered(0, &[(0, 0), (0, 0), (1, 0), (1, 0)]);
        ledger.delivered(1, &[(0, 0), (1, 0), (1, 0)]);
        let v = ledger.verdict(&t);
        assert_eq!((v.lost, v.qos2_duplicates, v.qos1_duplicates), (0, 1, 2), "{v:?}");
    }

    #[test]
    fn unacknowledged_qos0_and_unmatched_messages_are_not_owed() {
        let (t, ledger) = (topology(), Ledger::new(3, 2));
        ledger.acknowledged(2, &[0]); // a QoS 0 publisher's message: nothing owed
        ledger.acknowledged(0, &[1]); // subtopic 1: subscriber 1 ("+/0") is not owed it
        ledger.delivered(0, &[(0, 1), (0, 5)]);
        let v = ledger.verdict(&t);
        assert_eq!((v.owed, v.lost), (1, 0), "{v:?}");
    }
}
