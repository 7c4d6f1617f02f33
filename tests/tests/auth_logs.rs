//! No password ever reaches the broker's log: the real `amqtt` binary at its most verbose
//! (`-d`, `RUST_LOG=trace`) sees right, wrong and unknown users' passwords, a malformed CONNECT
//! carrying one, and a rate-limited login, and its whole log is searched for them.

use amqtt_tests::broker_process::BrokerProcess;
use amqtt_tests::raw::{field, frame};
use amqtt_tests::*;

/// Distinctive, so that finding one in the log cannot be a coincidence.
const RIGHT: &str = "Rt-pw-Q7x9Zk2";
const WRONG: &str = "Wr-pw-M4v8Lp1";
const UNKNOWN_USERS: &str = "Un-pw-H3j6Ns5";
const MALFORMED: &str = "Mf-pw-T2c5Bd8";

fn login(client_id: &str, username: &str, password: &str) -> Connect {
    Connect {
        username: Some(username.into()),
        password: Some(bytes::Bytes::copy_from_slice(password.as_bytes())),
        ..connect_packet(client_id, true)
    }
}

async fn connack(addr: std::net::SocketAddr, connect: Connect) -> ConnectReturnCode {
    let (mut client, connack) = TestClient::connect_with(addr, connect).await;
    if connack.code == ConnectReturnCode::Accepted {
        client.disconnect().await;
    } else {
        client.expect_closed().await;
    }
    connack.code
}

#[tokio::test]
async fn passwords_never_reach_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let hash = amqtt_auth_file::hash_argon2id(RIGHT.as_bytes()).unwrap();
    std::fs::write(dir.path().join("passwd"), format!("alice:{hash}\n")).unwrap();
    let config = dir.path().join("amqtt.yaml");
    std::fs::write(
        &config,
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n\
         auth:\n  plugins: [auth_anonymous, auth_file]\n  allow-anonymous: true\n  password-file: passwd\n  \
         max-failed-logins: 3\n  failed-login-ban: 600\n",
    )
    .unwrap();
    let mut broker = BrokerProcess::start_logging(&config, &["-d"], Some("trace"));
    let addr = broker.addr().await;

    broker
        .logging_while(async {
            assert_eq!(connack(addr, login("pw-right", "alice", RIGHT)).await, ConnectReturnCode::Accepted);
            let wrong = connack(addr, login("pw-wrong-1", "alice", WRONG)).await;
            assert_eq!(wrong, ConnectReturnCode::BadUserNameOrPassword);
            // Not in the file: let in by auth_anonymous, its password verified against a decoy.
            let unknown = connack(addr, login("pw-unknown", "mallory", UNKNOWN_USERS)).await;
            assert_eq!(unknown, ConnectReturnCode::Accepted);
            // A password without a user name [MQTT-3.1.2-22]: a malformed CONNECT.
            let mut client = TestClient::connect_raw(addr).await;
            let body = [&field(b"MQTT")[..], &[4, 0x42, 0, 60], &field(b"pw-malformed"), &field(MALFORMED.as_bytes())]
                .concat();
            client.send_bytes(&frame(0x10, &body)).await;
            client.expect_closed().await;
            for attempt in 2..=3 {
                let wrong = connack(addr, login(&format!("pw-wrong-{attempt}"), "alice", WRONG)).await;
                assert_eq!(wrong, ConnectReturnCode::BadUserNameOrPassword);
            }
            // Banned now: refused without a look at the (right) password.
            assert_eq!(connack(addr, login("pw-banned", "alice", RIGHT)).await, ConnectReturnCode::NotAuthorized);
        })
        .await;
    broker.log_line("the ban", |line| line.contains("WARN") && line.contains("too many failed logins")).await;
    let (status, log) = broker.terminate().await;
    assert!(status.success(), "{status:?}");

    // The log did record these logins, at the levels that would show a password if one leaked.
    for seen in ["TRACE", "DEBUG", "pw-right", "pw-wrong-3", "pw-banned", "\"alice\"", "\"mallory\""] {
        assert!(log.contains(seen), "the log has no {seen:?}:\n{log}");
    }
    assert!(!log.contains("setting not used"), "the rate-limit keys are the broker's own:\n{log}");
    for password in [RIGHT, WRONG, UNKNOWN_USERS, MALFORMED] {
        // As text, and as `Debug` prints bytes in a `Vec<u8>` or an array.
        let as_numbers = password.bytes().map(|byte| byte.to_string()).collect::<Vec<_>>().join(", ");
        for form in [password.to_string(), as_numbers] {
            let line = log.lines().find(|line| line.contains(&form));
            assert!(line.is_none(), "a password is in the log: {line:?}");
        }
    }
}
