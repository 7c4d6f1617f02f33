//! The `$SYS/broker/...` topics of one tick and their payloads, in aMQTT 0.12's order and text
//! format: integers in decimal, floats with three decimals, `time` and `uptime` in seconds,
//! `uptime/formatted` the start time as Python prints a UTC datetime. After aMQTT's topics come
//! Mosquitto's `publish/messages/dropped` and one `limits/<key>/exceeded` count per limit of the
//! broker configuration (named after its YAML key), which aMQTT does not have.

use std::time::{SystemTime, UNIX_EPOCH};

use amqtt_plugin_api::BrokerStats;

use crate::process::ProcessSample;

/// Where every topic of this plugin lives.
pub const ROOT: &str = "$SYS/broker/";

/// Published once, retained, when the broker starts.
pub const VERSION_TOPIC: &str = "$SYS/broker/version";

/// The topics of one tick (relative to [`ROOT`]) with their payloads.
pub fn report(stats: &BrokerStats, now: SystemTime, process: &ProcessSample) -> Vec<(&'static str, String)> {
    let now_secs = epoch_secs(now);
    let started_secs = epoch_secs(stats.started_at);
    let int = |value: u64| value.to_string();
    vec![
        ("load/bytes/received", int(stats.bytes_received)),
        ("load/bytes/sent", int(stats.bytes_sent)),
        ("messages/received", int(stats.packets_received)),
        ("messages/sent", int(stats.packets_sent)),
        ("time", int(now_secs)),
        ("uptime", int(now_secs.saturating_sub(started_secs))),
        ("uptime/formatted", utc_datetime(started_secs)),
        ("clients/connected", int(stats.clients_connected)),
        ("clients/disconnected", int(stats.clients_disconnected)),
        ("clients/maximum", int(stats.clients_maximum)),
        ("clients/total", int(stats.clients_total)),
        ("messages/inflight", int(stats.inflight_in + stats.inflight_out)),
        ("messages/inflight/in", int(stats.inflight_in)),
        ("messages/inflight/out", int(stats.inflight_out)),
        // aMQTT counts the retained messages among the stored ones, as Mosquitto does.
        ("messages/inflight/stored", int(stats.inflight_stored + stats.retained_messages)),
        ("messages/publish/received", int(stats.publish_received)),
        ("messages/publish/sent", int(stats.publish_sent)),
        ("messages/retained/count", int(stats.retained_messages)),
        ("messages/subscriptions/count", int(stats.subscriptions)),
        ("heap/size", float(process.heap_mib)),
        ("heap/maximum", float(process.heap_max_mib)),
        ("cpu/percent", float(process.cpu_percent)),
        ("cpu/maximum", float(process.cpu_max_percent)),
        ("publish/messages/dropped", int(stats.messages_dropped)),
        ("limits/packet-size/exceeded", int(stats.packets_too_large)),
        ("limits/connect-timeout/exceeded", int(stats.connect_timeouts)),
        ("limits/subscriptions/exceeded", int(stats.subscriptions_refused)),
        ("limits/topic-length/exceeded", int(stats.topics_too_long)),
        ("limits/topic-levels/exceeded", int(stats.topic_levels_exceeded)),
    ]
}

fn epoch_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// aMQTT's `float_to_bytes_str`: three decimals.
fn float(value: f64) -> String {
    format!("{value:.3}")
}

/// Python's `str(datetime.fromtimestamp(secs, UTC))`, e.g. `2025-03-01 12:00:05+00:00`.
fn utc_datetime(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00:00", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_as_python_prints_them() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00+00:00");
        assert_eq!(utc_datetime(951_782_400), "2000-02-29 00:00:00+00:00");
        assert_eq!(utc_datetime(1_709_251_199), "2024-02-29 23:59:59+00:00");
        assert_eq!(utc_datetime(1_735_689_600 + 3600 + 120 + 3), "2025-01-01 01:02:03+00:00");
        assert_eq!(utc_datetime(4_107_542_400), "2100-03-01 00:00:00+00:00");
    }

    #[test]
    fn every_topic_with_its_payload() {
        let started_at = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        let stats = BrokerStats { started_at, ..crate::tests::STATS };
        let process = ProcessSample { heap_mib: 12.3456, heap_max_mib: 20.0, cpu_percent: 1.5, cpu_max_percent: 33.3 };
        let now = started_at + Duration::from_secs(3725);
        let got = report(&stats, now, &process);
        let expected = [
            ("load/bytes/received", "1001"),
            ("load/bytes/sent", "2002"),
            ("messages/received", "31"),
            ("messages/sent", "42"),
            ("time", "1735693325"),
            ("uptime", "3725"),
            ("uptime/formatted", "2025-01-01 00:00:00+00:00"),
            ("clients/connected", "3"),
            ("clients/disconnected", "2"),
            ("clients/maximum", "7"),
            ("clients/total", "5"),
            ("messages/inflight", "5"),
            ("messages/inflight/in", "1"),
            ("messages/inflight/out", "4"),
            ("messages/inflight/stored", "17"),
            ("messages/publish/received", "5"),
            ("messages/publish/sent", "6"),
            ("messages/retained/count", "9"),
            ("messages/subscriptions/count", "11"),
            ("heap/size", "12.346"),
            ("heap/maximum", "20.000"),
            ("cpu/percent", "1.500"),
            ("cpu/maximum", "33.300"),
            ("publish/messages/dropped", "12"),
            ("limits/packet-size/exceeded", "13"),
            ("limits/connect-timeout/exceeded", "14"),
            ("limits/subscriptions/exceeded", "15"),
            ("limits/topic-length/exceeded", "16"),
            ("limits/topic-levels/exceeded", "17"),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(topic, payload)| (*topic, payload.as_str())).collect();
        assert_eq!(got, expected);
    }
}
