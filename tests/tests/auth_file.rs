//! The `auth_file` plugin in a running broker: clients of a password file let in with the right
//! password and refused with a wrong one, over real sockets, configured through `auth:` (alone
//! and after `auth_anonymous`) and through aMQTT 0.12's `plugins:` mapping.

use amqtt_tests::*;

/// A password file with `alice` (password `wonderland`, hashed as aMQTT 0.12 and amqtt_passwd
/// hash it) and a comment; it lives as long as the returned folder.
fn password_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let hash = amqtt_auth_file::hash_argon2id(b"wonderland").unwrap();
    std::fs::write(&path, format!("# users of the test broker\n\nalice:{hash}\n")).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

/// A CONNECT with `username` and `password` (each optional).
fn credentials(client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Connect {
    Connect {
        username: username.map(ByteString::from),
        password: password.map(bytes::Bytes::copy_from_slice),
        ..connect_packet(client_id, true)
    }
}

/// Connects with the given credentials and returns the CONNACK code; a refused client must
/// then be disconnected by the broker [MQTT-3.2.2-5].
async fn try_connect(broker: &RunningBroker, username: Option<&str>, password: Option<&[u8]>) -> ConnectReturnCode {
    let (mut client, connack) = TestClient::connect_with(addr(broker), credentials("c", username, password)).await;
    if connack.code == ConnectReturnCode::Accepted {
        client.disconnect().await;
    } else {
        client.expect_closed().await;
    }
    connack.code
}

/// Right password: accepted; wrong or missing password: 0x04; a user the file does not know:
/// nobody answered, 0x05; no credentials: refused.
async fn check_file_users(broker: &RunningBroker) {
    assert_eq!(try_connect(broker, Some("alice"), Some(b"wonderland")).await, ConnectReturnCode::Accepted);
    assert_eq!(
        try_connect(broker, Some("alice"), Some(b"looking-glass")).await,
        ConnectReturnCode::BadUserNameOrPassword
    );
    assert_eq!(try_connect(broker, Some("alice"), None).await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(try_connect(broker, Some("mallory"), Some(b"wonderland")).await, ConnectReturnCode::NotAuthorized);
    assert_ne!(try_connect(broker, None, None).await, ConnectReturnCode::Accepted);
}

#[tokio::test]
async fn auth_file_alone_from_the_auth_section() {
    let (_dir, path) = password_file();
    let broker = start_broker_with(&format!(
        "auth:\n  plugins: [auth_file]\n  password-file: {path}\n  allow-anonymous: false\n"
    ));
    check_file_users(&broker).await;
    broker.stop();
}

#[tokio::test]
async fn auth_file_after_auth_anonymous() {
    let (_dir, path) = password_file();
    let broker = start_broker_with(&format!(
        "auth:\n  plugins: [auth_anonymous, auth_file]\n  password-file: {path}\n  allow-anonymous: false\n"
    ));
    check_file_users(&broker).await;
    broker.stop();
}

/// With anonymous access allowed, a client without credentials gets in, but a user of the file
/// with a wrong password is still refused: every answer must be Allow.
#[tokio::test]
async fn a_wrong_password_is_refused_even_when_anonymous_access_is_allowed() {
    let (_dir, path) = password_file();
    let broker = start_broker_with(&format!(
        "auth:\n  plugins: [auth_anonymous, auth_file]\n  password-file: {path}\n  allow-anonymous: true\n"
    ));
    assert_eq!(try_connect(&broker, None, None).await, ConnectReturnCode::Accepted);
    assert_eq!(try_connect(&broker, Some("alice"), Some(b"wonderland")).await, ConnectReturnCode::Accepted);
    assert_eq!(try_connect(&broker, Some("alice"), Some(b"nope")).await, ConnectReturnCode::BadUserNameOrPassword);
    broker.stop();
}

#[tokio::test]
async fn amqtt_0_12_plugins_mapping() {
    let (_dir, path) = password_file();
    let broker = start_broker_with(&format!(
        "plugins:\n  amqtt.plugins.authentication.FileAuthPlugin:\n    password_file: {path}\n"
    ));
    check_file_users(&broker).await;
    broker.stop();
}

/// A client that was let in can use the broker: the CONNACK is not the last word.
#[tokio::test]
async fn an_authenticated_client_publishes_and_receives() {
    let (_dir, path) = password_file();
    let broker = start_broker_with(&format!("auth:\n  plugins: [auth_file]\n  password-file: {path}\n"));
    let (mut alice, _) =
        TestClient::connect_accepted(addr(&broker), credentials("alice-1", Some("alice"), Some(b"wonderland"))).await;
    assert_eq!(alice.subscribe(&[("t", QoS::AtLeastOnce)]).await, [SubscribeReturnCode::Success(QoS::AtLeastOnce)]);
    alice.publish("t", b"hi", QoS::AtLeastOnce, false).await;
    let got = alice.recv_publish().await;
    assert_eq!((topic(&got), text(&got)), ("t", "hi"));
    alice.disconnect().await;
    broker.stop();
}
