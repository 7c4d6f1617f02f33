//! One scenario's figures, printed for a person or as one hand-formatted JSON object per line.

use std::fmt::Write;

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// What the bench read from the broker's `/proc/PID` during the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerFigures {
    pub cpu_s: f64,
    pub rss_before_kib: u64,
    pub peak_rss_kib: u64,
}

/// The idle-connections scenario's own figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionFigures {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    pub connect_s: f64,
    pub per_s: f64,
    /// Broker RSS with every connection open (after a short settling pause).
    pub rss_connected_kib: Option<u64>,
    /// (RSS with the connections − RSS before) / connections.
    pub rss_per_conn_kib: Option<f64>,
}

/// The slow-consumer scenario's own figures: phase 1 (no stalled subscriber) against phase 2
/// (one subscriber that does not read). Rates are per reading subscriber.
#[derive(Debug, Clone, Default)]
pub struct SlowConsumerFigures {
    /// What the publishers were paced at, all together.
    pub target_rate: f64,
    pub baseline_rate: f64,
    pub stalled_rate: f64,
    /// stalled_rate / baseline_rate.
    pub ratio: f64,
    pub min_ratio: f64,
    /// What the publishers managed to send, per second.
    pub baseline_sent_rate: f64,
    pub stalled_sent_rate: f64,
    /// Publishing slots skipped because the publisher was held back (see `slow.rs`).
    pub baseline_skipped: u64,
    pub stalled_skipped: u64,
    /// Deliveries the reading subscribers missed (owed minus delivered, all of them).
    pub baseline_lost: u64,
    pub stalled_lost: u64,
    pub baseline_p99_us: Option<f64>,
    pub stalled_p99_us: Option<f64>,
    pub baseline_peak_rss_kib: Option<u64>,
    pub stalled_peak_rss_kib: Option<u64>,
    /// Phase 2's peak RSS minus phase 1's.
    pub rss_growth_kib: Option<i64>,
    pub max_rss_growth_kib: u64,
    /// Messages the stalled subscriber was owed, and received once it read again: the
    /// difference is what the broker dropped for it.
    pub stalled_owed: u64,
    pub stalled_received: u64,
    /// The rise of the broker's `$SYS/broker/publish/messages/dropped` over phase 2, if read.
    pub broker_dropped: Option<u64>,
    /// Why the scenario fails, if it does.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub label: String,
    pub qos: Option<u8>,
    pub publishers: usize,
    pub subscribers: usize,
    pub payload: usize,
    /// Configured publishing time.
    pub duration_s: f64,
    /// From the start to the last delivery.
    pub elapsed_s: f64,
    pub sent: u64,
    /// Publishes the broker acknowledged (QoS 1).
    pub acked: Option<u64>,
    /// Deliveries owed to subscribers: sent (QoS 0) or acknowledged (QoS 1) × subscribers per message.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Deliveries whose sequence number was not above the last one seen from that publisher
    /// (duplicates or reordering).
    pub out_of_order: u64,
    /// Delivered messages per second.
    pub rate: f64,
    pub latency: Option<Latency>,
    pub broker: Option<BrokerFigures>,
    pub bench_cpu_s: f64,
    /// CPUs' worth of time other processes used during the scenario (neither the broker nor the
    /// bench): how busy the machine was.
    pub other_load: Option<f64>,
    pub connections: Option<ConnectionFigures>,
    pub slow: Option<SlowConsumerFigures>,
    /// First error met by a client, if any (the scenario still reports what it measured).
    pub error: Option<String>,
}

impl Report {
    /// Broker CPU seconds per million delivered messages.
    pub fn broker_cpu_per_million(&self) -> Option<f64> {
        let broker = self.broker?;
        (self.delivered > 0).then(|| broker.cpu_s * 1e6 / self.delivered as f64)
    }

    pub fn to_json(&self) -> String {
        let mut j = Json::default();
        j.str("scenario", &self.scenario);
        j.str("label", &self.label);
        j.opt_u64("qos", self.qos.map(u64::from));
        j.u64("publishers", self.publishers as u64);
        j.u64("subscribers", self.subscribers as u64);
        j.u64("payload", self.payload as u64);
        j.f64("duration_s", Some(self.duration_s));
        j.f64("elapsed_s", Some(self.elapsed_s));
        j.u64("sent", self.sent);
        j.opt_u64("acked", self.acked);
        j.u64("expected", self.expected);
        j.u64("delivered", self.delivered);
        j.u64("lost", self.lost);
        j.u64("out_of_order", self.out_of_order);
        j.f64("rate", Some(self.rate));
        j.f64("p50_us", self.latency.map(|l| l.p50_us));
        j.f64("p99_us", self.latency.map(|l| l.p99_us));
        j.f64("max_us", self.latency.map(|l| l.max_us));
        j.f64("broker_cpu_s", self.broker.map(|b| b.cpu_s));
        j.f64("broker_cpu_s_per_million", self.broker_cpu_per_million());
        j.opt_u64("broker_rss_before_kib", self.broker.map(|b| b.rss_before_kib));
        j.opt_u64("broker_peak_rss_kib", self.broker.map(|b| b.peak_rss_kib));
        j.f64("bench_cpu_s", Some(self.bench_cpu_s));
        j.f64("other_load", self.other_load);
        if let Some(c) = &self.connections {
            j.u64("connections_requested", c.requested as u64);
            j.u64("connections", c.connected as u64);
            j.u64("connections_failed", c.failed as u64);
            j.f64("connect_s", Some(c.connect_s));
            j.f64("connections_per_s", Some(c.per_s));
            j.opt_u64("broker_rss_connected_kib", c.rss_connected_kib);
            j.f64("rss_per_connection_kib", c.rss_per_conn_kib);
        }
        if let Some(s) = &self.slow {
            j.f64("target_rate", Some(s.target_rate));
            j.f64("baseline_rate", Some(s.baseline_rate));
            j.f64("stalled_rate", Some(s.stalled_rate));
            j.f64("ratio", Some(s.ratio));
            j.f64("min_ratio", Some(s.min_ratio));
            j.f64("baseline_sent_rate", Some(s.baseline_sent_rate));
            j.f64("stalled_sent_rate", Some(s.stalled_sent_rate));
            j.u64("baseline_skipped", s.baseline_skipped);
            j.u64("stalled_skipped", s.stalled_skipped);
            j.u64("baseline_lost", s.baseline_lost);
            j.u64("stalled_lost", s.stalled_lost);
            j.f64("baseline_p99_us", s.baseline_p99_us);
            j.f64("stalled_p99_us", s.stalled_p99_us);
            j.opt_u64("baseline_peak_rss_kib", s.baseline_peak_rss_kib);
            j.opt_u64("stalled_peak_rss_kib", s.stalled_peak_rss_kib);
            j.f64("rss_growth_kib", s.rss_growth_kib.map(|g| g as f64));
            j.u64("max_rss_growth_kib", s.max_rss_growth_kib);
            j.u64("stalled_owed", s.stalled_owed);
            j.u64("stalled_received", s.stalled_received);
            j.u64("dropped_for_stalled", s.stalled_owed.saturating_sub(s.stalled_received));
            j.opt_u64("broker_dropped", s.broker_dropped);
            j.bool("pass", s.failures.is_empty());
            if !s.failures.is_empty() {
                j.str("failures", &s.failures.join("; "));
            }
        }
        if let Some(error) = &self.error {
            j.str("error", error);
        }
        j.finish()
    }

    pub fn to_human(&self) -> String {
        let mut s = format!("{:<13} {:<10}", self.scenario, self.label);
        if let Some(slow) = &self.slow {
            slow.write_human(&mut s);
        } else if let Some(c) = &self.connections {
            let _ =
                write!(s, " {}/{} connected in {:.2} s: {:.0} conn/s", c.connected, c.requested, c.connect_s, c.per_s);
            if let Some(per) = c.rss_per_conn_kib {
                let _ = write!(s, ", broker RSS {per:.2} KiB per connection");
            }
        } else {
            let _ = write!(s, " delivered {} ({:.0} msg/s), lost {}", self.delivered, self.rate, self.lost);
            if self.out_of_order > 0 {
                let _ = write!(s, ", out of order {}", self.out_of_order);
            }
            if let Some(l) = self.latency {
                let _ = write!(
                    s,
                    ", latency p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
                    l.p50_us / 1e3,
                    l.p99_us / 1e3,
                    l.max_us / 1e3
                );
            }
        }
        if let Some(b) = self.broker {
            let _ = write!(s, ", broker CPU {:.2} s", b.cpu_s);
            if let Some(per_m) = self.broker_cpu_per_million() {
                let _ = write!(s, " ({per_m:.2} s/M msg)");
            }
            let _ = write!(s, ", broker peak RSS {:.1} MiB", b.peak_rss_kib as f64 / 1024.0);
        }
        let _ = write!(s, ", bench CPU {:.2} s", self.bench_cpu_s);
        if let Some(load) = self.other_load.filter(|&load| load >= 0.1) {
            let _ = write!(s, ", other processes {load:.2} CPUs");
        }
        if let Some(error) = &self.error {
            let _ = write!(s, ", ERROR: {error}");
        }
        s
    }
}

impl SlowConsumerFigures {
    fn write_human(&self, s: &mut String) {
        let ms = |us: Option<f64>| us.map_or("—".to_owned(), |us| format!("{:.3} ms", us / 1e3));
        let mib = |kib: Option<u64>| kib.map_or("—".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
        let _ = write!(
            s,
            " per reading subscriber: {:.0} msg/s without the stalled one, {:.0} with it (ratio {:.3}, at least {}); \
             publishers sent {:.0} and {:.0} msg/s of {:.0} (skipped {} and {}); p99 {} and {}; \
             broker peak RSS {} and {} ({}{:.1} MiB, at most {:.1}); the stalled subscriber got {} of {} (dropped {}); \
             the reading ones missed {} and {}",
            self.baseline_rate,
            self.stalled_rate,
            self.ratio,
            self.min_ratio,
            self.baseline_sent_rate,
            self.stalled_sent_rate,
            self.target_rate,
            self.baseline_skipped,
            self.stalled_skipped,
            ms(self.baseline_p99_us),
            ms(self.stalled_p99_us),
            mib(self.baseline_peak_rss_kib),
            mib(self.stalled_peak_rss_kib),
            if self.rss_growth_kib.unwrap_or(0) >= 0 { "+" } else { "" },
            self.rss_growth_kib.unwrap_or(0) as f64 / 1024.0,
            self.max_rss_growth_kib as f64 / 1024.0,
            self.stalled_received,
            self.stalled_owed,
            self.stalled_owed.saturating_sub(self.stalled_received),
            self.baseline_lost,
            self.stalled_lost,
        );
        if let Some(dropped) = self.broker_dropped {
            let _ = write!(s, "; the broker counted {dropped} drops");
        }
        let _ = write!(s, "; {}", if self.failures.is_empty() { "PASS" } else { "FAIL" });
    }
}

/// A flat JSON object writer: enough for numbers, strings, booleans and nulls.
#[derive(Default)]
struct Json {
    out: String,
}

impl Json {
    fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.push('"');
        for c in value.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn opt_u64(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => self.u64(key, v),
            None => {
                self.key(key);
                self.out.push_str("null");
            }
        }
    }

    fn f64(&mut self, key: &str, value: Option<f64>) {
        self.key(key);
        match value {
            Some(v) if v.is_finite() => {
                let _ = write!(self.out, "{}", (v * 1000.0).round() / 1000.0);
            }
            _ => self.out.push_str("null"),
        }
    }

    fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_and_escaped() {
        let report = Report {
            scenario: "fanin-qos0".into(),
            label: "a\"b".into(),
            qos: Some(0),
            delivered: 10,
            rate: 1.23456,
            ..Report::default()
        };
        let json = report.to_json();
        assert!(json.starts_with("{\"scenario\":\"fanin-qos0\",\"label\":\"a\\\"b\",\"qos\":0,"), "{json}");
        assert!(json.contains("\"rate\":1.235,"), "{json}");
        assert!(json.contains("\"p50_us\":null,"), "{json}");
        assert!(json.ends_with('}'));
    }
}
