//! `.so` plugins the way a plugin author ships them (examples/auth-plugin-hmac/README.md):
//! build the example crate with cargo, copy the library into `plugins/` next to a config file,
//! enable it by name, run the `amqtt` binary on that config and connect over TCP. Next to it in
//! the folder, libraries that are not usable plugins must be skipped with a warning in the
//! broker's log, not stop it; a plugin written in C against `amqtt_plugin.h` must work the
//! same; and a plugin name nobody provides must stop start-up.
//!
//! The broker runs as a child process so that its log (stderr) and exit status are what a user
//! sees. Each wait is bounded and ends on the awaited log line or packet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use amqtt_tests::broker_process::{cargo_build, BrokerProcess};
use amqtt_tests::{connect_packet, ByteString, ConnectReturnCode, TestClient};
use bytes::Bytes;

/// HMAC-SHA256 of `alice` under the secret `s3cret`, as the README computes it:
/// `printf %s alice | openssl dgst -sha256 -hmac s3cret`.
const ALICE_HMAC: &str = "765542af1f1d587bc60c218dca532a258f56b9c21a427cc819de2a1ff6d3e146";

/// An auth plugin in C: lets in the password `letmein`, denies others, has no opinion without
/// one; says hello through the broker's log when created.
const C_LETMEIN: &str = r#"
#include <string.h>
#include "amqtt_plugin.h"

static amqtt_str text(const char *s) { amqtt_str r = { (const uint8_t *)s, strlen(s) }; return r; }

static void *create(const amqtt_host *host, amqtt_str name, amqtt_str settings, amqtt_str dir,
                    amqtt_report_fn report, void *context) {
    (void)settings; (void)dir; (void)report; (void)context;
    host->log(AMQTT_LOG_INFO, name, text("letmein plugin ready"));
    static int instance;
    return &instance;
}

static void destroy(void *instance) { (void)instance; }

static uint32_t authenticate(void *instance, const amqtt_client *client) {
    (void)instance;
    if (!client->password.ptr) return AMQTT_ANSWER_NO_OPINION;
    if (client->password.len == 7 && memcmp(client->password.ptr, "letmein", 7) == 0) return AMQTT_ANSWER_ALLOW;
    return AMQTT_ANSWER_DENY;
}

static const amqtt_plugin_descriptor DESCRIPTOR = {
    AMQTT_PLUGIN_ABI_VERSION, AMQTT_KIND_AUTH, "c_letmein", create, destroy, authenticate, NULL,
};
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return &DESCRIPTOR; }
"#;

/// A plugin built for an ABI version this broker does not speak.
const C_WRONG_ABI: &str = r#"
#include "amqtt_plugin.h"
static const amqtt_plugin_descriptor DESCRIPTOR = { 999, AMQTT_KIND_AUTH, "from_the_future", NULL, NULL, NULL, NULL };
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return &DESCRIPTOR; }
"#;

/// The example plugin, built once for all tests with this test's profile (and the broker with
/// it: see `amqtt_tests::broker_process`).
fn hmac_plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let profile_dir = cargo_build(&["-p", "auth-plugin-hmac"]);
        let plugin = profile_dir.join(format!(
            "{}auth_plugin_hmac{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        assert!(plugin.is_file(), "no plugin library at {}", plugin.display());
        plugin
    })
}

/// A fresh folder for one test's config file and plugins, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(test: &str) -> Folder {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("plugins_so-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("plugins")).unwrap();
        Folder(path)
    }

    fn plugins(&self) -> PathBuf {
        self.0.join("plugins")
    }

    /// Writes `amqtt.yaml` with a tcp listener on a free port and `rest`; returns its path.
    fn config(&self, rest: &str) -> PathBuf {
        let path = self.0.join("amqtt.yaml");
        let yaml = format!("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n{rest}");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Copies the example plugin into `plugins/`, as the README says.
    fn install_hmac_plugin(&self) {
        std::fs::copy(hmac_plugin(), self.plugins().join("libauth_plugin_hmac.so")).unwrap();
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles C `source` into the shared library `dir/file` against the plugin header.
fn compile_c(dir: &Path, file: &str, source: &str) {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/include");
    let c_file = dir.join(format!("{file}.c"));
    std::fs::write(&c_file, source).unwrap();
    let output = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(include)
        .arg("-o")
        .arg(dir.join(file))
        .arg(&c_file)
        .output()
        .expect("cannot run `cc`: this test needs a C compiler");
    assert!(output.status.success(), "cc failed on {file}:\n{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_file(c_file).unwrap();
}

/// The CONNACK code a clean-session client gets with these credentials.
async fn connack(addr: SocketAddr, username: Option<&str>, password: Option<&str>) -> ConnectReturnCode {
    let connect = amqtt_tests::Connect {
        username: username.map(ByteString::from),
        password: password.map(|password| Bytes::copy_from_slice(password.as_bytes())),
        ..connect_packet("plugin-test", true)
    };
    let (mut client, connack) = TestClient::connect_with(addr, connect).await;
    if connack.code == ConnectReturnCode::Accepted {
        client.ping().await;
    } else {
        client.expect_closed().await;
    }
    connack.code
}

#[tokio::test]
async fn hmac_plugin_from_the_plugins_folder_lets_in_exactly_the_right_clients() {
    let folder = Folder::new("hmac");
    folder.install_hmac_plugin();
    let config = folder.config("auth:\n  plugins: [auth_hmac]\n  hmac-secret: s3cret\n");
    let mut broker = BrokerProcess::start(&config);
    let addr = broker.addr().await;
    broker
        .log_line("`plugin file loaded` line", |line| line.contains("plugin file loaded") && line.contains("auth_hmac"))
        .await;

    assert_eq!(connack(addr, Some("alice"), Some(ALICE_HMAC)).await, ConnectReturnCode::Accepted);
    let wrong = ALICE_HMAC.replace('7', "8");
    assert_eq!(connack(addr, Some("alice"), Some(&wrong)).await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(
        connack(addr, Some("bob"), Some(ALICE_HMAC)).await,
        ConnectReturnCode::BadUserNameOrPassword,
        "alice's password is not bob's"
    );
    assert_eq!(
        connack(addr, Some("alice"), None).await,
        ConnectReturnCode::NotAuthorized,
        "the only plugin has no opinion without a password: refused"
    );
    assert_eq!(connack(addr, None, None).await, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn unusable_libraries_in_the_folder_are_skipped_with_a_warning() {
    let folder = Folder::new("skipped");
    folder.install_hmac_plugin();
    compile_c(&folder.plugins(), "from_the_future.so", C_WRONG_ABI);
    std::fs::write(folder.plugins().join("garbage.so"), "this is not a shared library\n").unwrap();
    let config = folder.config("auth:\n  plugins: [auth_hmac]\n  hmac-secret: s3cret\n");
    let mut broker = BrokerProcess::start(&config);
    let addr = broker.addr().await;
    let line = broker.warning("from_the_future.so", "built for plugin ABI version 999").await;
    assert!(line.contains("this broker speaks version 1: rebuild it against amqtt-plugin-api"), "{line}");
    broker.warning("garbage.so", "not a loadable library").await;
    // The broker runs, with the good plugin.
    assert_eq!(connack(addr, Some("alice"), Some(ALICE_HMAC)).await, ConnectReturnCode::Accepted);
}

#[tokio::test]
async fn c_plugin_built_against_the_header_works_end_to_end() {
    let folder = Folder::new("c");
    compile_c(&folder.plugins(), "letmein.so", C_LETMEIN);
    let config = folder.config("auth:\n  plugins: [c_letmein]\n");
    let mut broker = BrokerProcess::start(&config);
    let addr = broker.addr().await;
    let line = broker.log_line("the plugin's own log line", |line| line.contains("letmein plugin ready")).await;
    assert!(line.contains("INFO") && line.contains("plugin=c_letmein"), "{line}");

    assert_eq!(connack(addr, Some("carol"), Some("letmein")).await, ConnectReturnCode::Accepted);
    assert_eq!(connack(addr, Some("carol"), Some("letmeout")).await, ConnectReturnCode::BadUserNameOrPassword);
    assert_eq!(connack(addr, Some("carol"), None).await, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn a_library_named_by_path_is_loaded_without_the_plugins_folder() {
    let folder = Folder::new("path");
    let elsewhere = folder.0.join("lib");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(hmac_plugin(), elsewhere.join("hmac.so")).unwrap();
    let config = folder.config("auth:\n  plugins: [lib/hmac.so]\n  hmac-secret: s3cret\n");
    let mut broker = BrokerProcess::start(&config);
    let addr = broker.addr().await;
    assert_eq!(connack(addr, Some("alice"), Some(ALICE_HMAC)).await, ConnectReturnCode::Accepted);
    assert_eq!(connack(addr, Some("alice"), Some("00")).await, ConnectReturnCode::BadUserNameOrPassword);
}

#[tokio::test]
async fn a_plugin_nobody_provides_stops_start_up_naming_it_and_the_available_ones() {
    let folder = Folder::new("missing");
    folder.install_hmac_plugin();
    let config = folder.config("auth:\n  plugins: [auth_hmca]\n  hmac-secret: s3cret\n");
    let (status, log) = BrokerProcess::start(&config).exit().await;
    assert!(!status.success(), "amqtt started without the plugin it was told to use:\n{log}");
    let error = log.lines().find(|line| line.contains("auth_hmca")).unwrap_or_else(|| panic!("{log}"));
    assert!(error.contains("auth_hmac") && error.contains("auth_anonymous"), "available plugins not listed: {error}");
    assert!(!log.contains("listening"), "{log}");
}

#[tokio::test]
async fn a_plugin_without_its_required_setting_stops_start_up_saying_what_to_set() {
    let folder = Folder::new("no-secret");
    folder.install_hmac_plugin();
    let config = folder.config("auth:\n  plugins: [auth_hmac]\n");
    let (status, log) = BrokerProcess::start(&config).exit().await;
    assert!(!status.success(), "amqtt started with a plugin that could not be built:\n{log}");
    assert!(log.contains("auth_hmac") && log.contains("set `auth.hmac-secret`"), "{log}");
}
