//! Failed-login rate limiting (`auth.max-failed-logins`, `failed-login-window`,
//! `failed-login-ban`): an address that fails too often is refused with CONNACK 0x05 without its
//! credentials being checked, even the right ones, until its ban ends; other addresses are not
//! affected; 0 turns it off. Over real sockets, with `auth_file` and a password file.

use std::net::SocketAddr;
use std::time::Duration;

use amqtt_broker::config::FailedLoginLimit;
use amqtt_tests::*;
use tokio::net::TcpSocket;
use tokio::time::Instant;

/// Python bcrypt 5.0 `hashpw(b"hunter2", gensalt(rounds=4))`: fast to verify, so that tests
/// can fail many logins.
const BCRYPT_HUNTER2: &str = "$2b$04$qJ1dWmViDt1VJp5ROlv5eeI9B61d.k43GPUCgp6K8BRL.6llZiGha";

/// A broker whose `auth_file` knows `alice` (password `hunter2`), with `limits` added to its
/// `auth:` section.
fn broker(limits: &str) -> (RunningBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    std::fs::write(&path, format!("alice:{BCRYPT_HUNTER2}\n")).unwrap();
    let broker =
        start_broker_with(&format!("auth:\n  plugins: [auth_file]\n  password-file: {}\n{limits}", path.display()));
    (broker, dir)
}

/// Connects from `from` (an address of this machine) as alice with `password`; the CONNACK code.
async fn login_from(from: &str, broker: SocketAddr, password: &[u8]) -> ConnectReturnCode {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    let stream = socket.connect(broker).await.expect("cannot connect to the broker");
    let mut client = TestClient::over(stream);
    client
        .send(Connect {
            username: Some("alice".into()),
            password: Some(bytes::Bytes::copy_from_slice(password)),
            ..connect_packet("", true)
        })
        .await;
    let code = match client.recv().await {
        Packet::ConnAck(connack) => connack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if code == ConnectReturnCode::Accepted {
        client.disconnect().await;
    } else {
        client.expect_closed().await;
    }
    code
}

async fn login(broker: &RunningBroker, password: &[u8]) -> ConnectReturnCode {
    login_from("127.0.0.1", addr(broker), password).await
}

/// (failed, rate-limited) logins counted so far.
fn counted(broker: &RunningBroker) -> (u64, u64) {
    let stats = broker.stats();
    (stats.logins_failed, stats.logins_rate_limited)
}

#[tokio::test]
async fn after_max_failures_even_the_right_password_is_refused_unchecked() {
    let (broker, _dir) = broker("  max-failed-logins: 3\n  failed-login-ban: 600\n");
    for attempt in 1..=3 {
        assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword, "attempt {attempt}");
    }
    assert_eq!(counted(&broker), (3, 0));
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::NotAuthorized, "banned: not even checked");
    assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::NotAuthorized);
    assert_eq!(counted(&broker), (3, 2), "refusals of a banned address are not failed logins");
    // Another address of this machine is not affected (127.0.0.0/8 is all loopback on Linux).
    assert_eq!(login_from("127.0.0.2", addr(&broker), b"hunter2").await, ConnectReturnCode::Accepted);
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::NotAuthorized, "still banned");
    broker.stop();
}

#[tokio::test]
async fn a_successful_login_does_not_reset_the_count() {
    let (broker, _dir) = broker("  max-failed-logins: 3\n  failed-login-ban: 600\n");
    for _ in 0..2 {
        assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    }
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::Accepted);
    assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::NotAuthorized, "third failure banned it");
    broker.stop();
}

#[tokio::test]
async fn by_default_ten_failures_ban_the_address() {
    let (broker, _dir) = broker("");
    for _ in 0..10 {
        assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    }
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::NotAuthorized);
    assert_eq!(counted(&broker), (10, 1));
    broker.stop();
}

#[tokio::test]
async fn the_ban_ends_and_the_address_starts_afresh() {
    let (broker, _dir) = broker("  max-failed-logins: 2\n  failed-login-ban: 0.3\n");
    for _ in 0..2 {
        assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    }
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::NotAuthorized);
    let deadline = Instant::now() + WAIT;
    loop {
        match login(&broker, b"hunter2").await {
            ConnectReturnCode::Accepted => break,
            ConnectReturnCode::NotAuthorized => {}
            other => panic!("unexpected CONNACK {other:?}"),
        }
        assert!(Instant::now() < deadline, "still banned after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (failed, limited) = counted(&broker);
    assert_eq!(failed, 2, "attempts while banned did not count as failures (nor prolong the ban)");
    assert!(limited >= 1);
    // A fresh start: one failure does not ban again.
    assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::Accepted);
    broker.stop();
}

#[tokio::test]
async fn failures_older_than_the_window_do_not_count() {
    let window = Duration::from_millis(300);
    let (broker, _dir) = broker("  max-failed-logins: 2\n  failed-login-window: 0.3\n  failed-login-ban: 600\n");
    assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    // The broker counted that failure before its CONNACK came: once `window` has passed since
    // then, that failure's window is over, whatever the machine's speed.
    tokio::time::sleep_until(Instant::now() + window).await;
    assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::Accepted, "one failure in this window");
    // Two within one window do ban.
    assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::NotAuthorized);
    broker.stop();
}

#[tokio::test]
async fn zero_turns_rate_limiting_off() {
    let (broker, _dir) = broker("  max-failed-logins: 0\n");
    for _ in 0..20 {
        assert_eq!(login(&broker, b"guess").await, ConnectReturnCode::BadUserNameOrPassword);
    }
    assert_eq!(login(&broker, b"hunter2").await, ConnectReturnCode::Accepted);
    assert_eq!(counted(&broker), (20, 0));
    broker.stop();
}

/// Clients refused for other reasons than a password (no credentials, anonymous access not
/// allowed) fail logins too.
#[tokio::test]
async fn refused_anonymous_clients_count_as_failed_logins() {
    let broker =
        start_broker_with("auth:\n  plugins: [auth_anonymous]\n  allow-anonymous: false\n  max-failed-logins: 2\n");
    for _ in 0..3 {
        let (mut client, connack) = TestClient::connect_with(addr(&broker), connect_packet("anon", true)).await;
        assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
        client.expect_closed().await;
    }
    assert_eq!(counted(&broker), (2, 1));
    broker.stop();
}

#[test]
fn the_keys_are_read_in_either_spelling_with_defaults() {
    let load = |yaml: &str| Config::from_yaml_str(yaml, None).unwrap();
    let (config, warnings) =
        load("auth:\n  max_failed_logins: 5\n  failed_login_window: 1.5\n  failed-login-ban: 3600\n");
    assert!(warnings.is_empty(), "{warnings:?}");
    let expected =
        FailedLoginLimit { max_failures: 5, window: Duration::from_millis(1500), ban: Duration::from_secs(3600) };
    assert_eq!(config.auth.failed_logins, expected);
    let defaults = FailedLoginLimit { max_failures: 10, window: Duration::from_secs(60), ban: Duration::from_secs(60) };
    assert_eq!(load("").0.auth.failed_logins, defaults);
    assert_eq!(load("auth:\n  allow-anonymous: true\n").0.auth.failed_logins, defaults);
}

#[test]
fn bad_values_stop_start_up_naming_the_key() {
    let cases = [
        ("max-failed-logins: -1", "auth.max-failed-logins", "use an integer from 0 to 4294967295"),
        ("max-failed-logins: 5000000000", "auth.max-failed-logins", "invalid value"),
        ("max-failed-logins: many", "auth.max-failed-logins", "integer"),
        ("failed-login-window: 0", "auth.failed-login-window", "positive number of seconds"),
        ("failed-login-ban: -5", "auth.failed-login-ban", "positive number of seconds"),
        ("failed_login_ban: soon", "auth.failed_login_ban", "seconds"),
    ];
    for (line, path, reason) in cases {
        let error = Config::from_yaml_str(&format!("auth:\n  {line}\n"), None).err();
        let message = error.unwrap_or_else(|| panic!("{line:?} was accepted")).to_string();
        assert!(message.contains(path) && message.contains(reason), "{line:?}: {message}");
    }
}
