//! `auth_file` as the broker sees it: found in the registry by name or aMQTT class name, built
//! from YAML settings, asked about clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use amqtt_auth_file::{FileAuth, Users, Verifier};
use amqtt_plugin_api::{abi, registrations, Answer, AuthPlugin, ClientInfo, Instance, PluginContext, Value};

/// Python bcrypt 5.0 `hashpw(b"hunter2", gensalt(rounds=4))`: fast to verify.
const BCRYPT_HUNTER2: &str = "$2b$04$qJ1dWmViDt1VJp5ROlv5eeI9B61d.k43GPUCgp6K8BRL.6llZiGha";
/// argon2-cffi 25.1 `PasswordHasher().hash("hunter2")`, as aMQTT 0.12 writes it: slow to verify.
const ARGON2ID_HUNTER2: &str =
    "$argon2id$v=19$m=65536,t=3,p=4$HgncBE3Q2TGUssLgs+hB/Q$y7Vs24I0b+aKoXCbtS+x+jEarf77YZMN4kbck+E4HKA";

fn client(username: Option<&str>) -> ClientInfo {
    ClientInfo {
        client_id: "c1".into(),
        username: username.map(str::to_owned),
        peer: "127.0.0.1:5000".parse().unwrap(),
        cert_subject: None,
        clean_session: true,
    }
}

/// Builds the plugin registered as `name` from `yaml`, in a context whose config folder is `dir`.
fn build(name: &str, yaml: &str, dir: &std::path::Path) -> Result<Arc<dyn AuthPlugin>, String> {
    let registration = registrations().find(|r| r.answers_to(name)).expect("auth_file is registered");
    let value: Value = yaml_serde::from_str(yaml).unwrap();
    let context = PluginContext { plugin_name: name.into(), config_dir: Some(dir.to_path_buf()) };
    match (registration.build)(&value, &context) {
        Ok(built) => match built.instance {
            Instance::Auth(plugin) => Ok(plugin),
            other => panic!("auth_file built as {other:?}"),
        },
        Err(error) => Err(error.to_string()),
    }
}

fn password_dir(contents: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), contents).unwrap();
    dir
}

#[test]
fn registered_under_its_name_and_amqtt_class_name() {
    let registration = registrations().find(|r| r.answers_to("amqtt.plugins.authentication.FileAuthPlugin")).unwrap();
    assert_eq!(registration.name, "auth_file");
    assert_eq!(registration.kind, amqtt_plugin_api::Kind::Auth);
}

#[tokio::test]
async fn answers_from_the_shared_auth_section_with_a_relative_path() {
    let dir = password_dir(&format!("# test users\n\nalice:{BCRYPT_HUNTER2}\n"));
    let yaml = "plugins: [auth_file]\nallow-anonymous: false\npassword-file: passwd\n";
    let plugin = build("auth_file", yaml, dir.path()).unwrap();
    assert_eq!(plugin.authenticate(&client(Some("alice")), Some(b"hunter2")).await, Answer::Allow);
    assert_eq!(plugin.authenticate(&client(Some("alice")), Some(b"hunter3")).await, Answer::Deny);
    assert_eq!(plugin.authenticate(&client(Some("alice")), Some(b"")).await, Answer::Deny);
    assert_eq!(plugin.authenticate(&client(Some("alice")), None).await, Answer::Deny);
    assert_eq!(plugin.authenticate(&client(Some("mallory")), Some(b"hunter2")).await, Answer::NoOpinion);
    assert_eq!(plugin.authenticate(&client(None), Some(b"hunter2")).await, Answer::NoOpinion);
    assert_eq!(plugin.authenticate(&client(None), None).await, Answer::NoOpinion);
}

#[tokio::test]
async fn amqtt_0_12_spelling_and_absolute_path() {
    let dir = password_dir(&format!("alice:{BCRYPT_HUNTER2}\n"));
    let yaml = format!("password_file: {}\n", dir.path().join("passwd").display());
    let plugin =
        build("amqtt.plugins.authentication.FileAuthPlugin", &yaml, std::path::Path::new("/elsewhere")).unwrap();
    assert_eq!(plugin.authenticate(&client(Some("alice")), Some(b"hunter2")).await, Answer::Allow);
}

#[tokio::test]
async fn without_a_password_file_it_has_no_opinion() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = build("auth_file", "allow-anonymous: true", dir.path()).unwrap();
    assert_eq!(plugin.authenticate(&client(Some("alice")), Some(b"hunter2")).await, Answer::NoOpinion);
    assert_eq!(plugin.authenticate(&client(None), None).await, Answer::NoOpinion);
    let plugin = build("auth_file", "~", dir.path()).unwrap();
    assert_eq!(plugin.authenticate(&client(Some("alice")), None).await, Answer::NoOpinion);
}

#[test]
fn a_bad_line_stops_the_build_naming_file_and_line() {
    let dir = password_dir(&format!("alice:{BCRYPT_HUNTER2}\n# ok\nbob:secret-in-clear\n"));
    let error = build("auth_file", "password-file: passwd", dir.path()).err().unwrap();
    let file = dir.path().join("passwd");
    assert!(error.contains(&format!("{} line 3", file.display())), "{error}");
    assert!(!error.contains("secret-in-clear"), "{error}");
}

#[test]
fn a_missing_password_file_stops_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let error = build("auth_file", "password-file: nope", dir.path()).err().unwrap();
    assert!(error.contains(&dir.path().join("nope").display().to_string()), "{error}");
}

#[test]
fn a_wrongly_typed_setting_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let error = build("auth_file", "password-file: [a, b]", dir.path()).err().unwrap();
    assert!(error.contains("password-file"), "{error}");
}

#[test]
fn verifies_inline_without_a_tokio_runtime() {
    let users = Users::parse(&format!("alice:{BCRYPT_HUNTER2}\n"), "t".as_ref()).unwrap();
    let plugin = FileAuth::with_users(users, Verifier::new(1));
    assert_eq!(abi::block_on(plugin.authenticate(&client(Some("alice")), Some(b"hunter2"))), Answer::Allow);
    assert_eq!(abi::block_on(plugin.authenticate(&client(Some("alice")), Some(b"nope"))), Answer::Deny);
}

/// In a current-thread runtime (as the broker's sessions run), another future on the same
/// thread makes progress while a slow argon2id verification is under way: the hashing is not
/// done on the session's thread.
#[tokio::test(flavor = "current_thread")]
async fn verification_does_not_block_the_calling_thread() {
    let users = Users::parse(&format!("alice:{ARGON2ID_HUNTER2}\n"), "t".as_ref()).unwrap();
    let plugin = FileAuth::with_users(users, Verifier::new(2));
    let order = AtomicUsize::new(0);
    let alice = client(Some("alice"));
    let ((answer, verified_at), other_at) = tokio::join!(
        async {
            let answer = plugin.authenticate(&alice, Some(b"hunter2")).await;
            (answer, order.fetch_add(1, Ordering::SeqCst))
        },
        async {
            tokio::task::yield_now().await;
            order.fetch_add(1, Ordering::SeqCst)
        },
    );
    assert_eq!(answer, Answer::Allow);
    assert!(other_at < verified_at, "the other future waited for the verification");
}

/// A user the file does not know costs a hash verification like a known user with a wrong
/// password, so the time to answer does not tell who is in the file; counted, not timed.
#[tokio::test]
async fn an_unknown_user_costs_a_verification_like_a_known_one() {
    let users = Users::parse(&format!("alice:{BCRYPT_HUNTER2}\n"), "t".as_ref()).unwrap();
    let plugin = FileAuth::with_users(users, Verifier::new(1));
    assert_eq!(plugin.authenticate(&client(Some("alice")), Some(b"nope")).await, Answer::Deny);
    assert_eq!(plugin.verifications(), 1);
    // Even the decoy's own password answers nothing for another user.
    for password in [&b"nope"[..], b"hunter2", b""] {
        assert_eq!(plugin.authenticate(&client(Some("mallory")), Some(password)).await, Answer::NoOpinion);
    }
    assert_eq!(plugin.verifications(), 4, "each unknown user with a password went through a verification");
    // Without a password nobody is verified, known or not: both answer at once.
    assert_eq!(plugin.authenticate(&client(Some("alice")), None).await, Answer::Deny);
    assert_eq!(plugin.authenticate(&client(Some("mallory")), None).await, Answer::NoOpinion);
    assert_eq!(plugin.authenticate(&client(None), Some(b"hunter2")).await, Answer::NoOpinion);
    assert_eq!(plugin.verifications(), 4);
}

#[tokio::test]
async fn an_empty_password_file_verifies_nothing() {
    let plugin = FileAuth::with_users(Users::parse("# nobody\n", "t".as_ref()).unwrap(), Verifier::new(1));
    assert_eq!(plugin.authenticate(&client(Some("mallory")), Some(b"x")).await, Answer::NoOpinion);
    assert_eq!(plugin.verifications(), 0);
}
