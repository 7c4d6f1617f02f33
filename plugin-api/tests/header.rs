//! `include/amqtt_plugin.h` describes the same ABI as `src/abi.rs`: a C program compiled
//! against the header prints the size, alignment and field offsets of every struct and the
//! value of every constant, and they must equal what Rust says of its own definitions. Any
//! drift between the two (a field added on one side, a constant changed) fails here.

use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use amqtt_plugin_api::abi::{self, AbiClient, AbiHost, AbiStr, PluginDescriptor};

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include "amqtt_plugin.h"

#define LAYOUT(t) printf("%s size %zu align %zu\n", #t, sizeof(t), _Alignof(t))
#define FIELD(t, f) printf("%s.%s %zu\n", #t, #f, offsetof(t, f))
#define CONST(c) printf("%s = %lu\n", #c, (unsigned long)(c))

int main(void) {
    LAYOUT(amqtt_str);
    FIELD(amqtt_str, ptr);
    FIELD(amqtt_str, len);
    LAYOUT(amqtt_client);
    FIELD(amqtt_client, client_id);
    FIELD(amqtt_client, username);
    FIELD(amqtt_client, password);
    FIELD(amqtt_client, peer);
    FIELD(amqtt_client, cert_subject);
    FIELD(amqtt_client, clean_session);
    LAYOUT(amqtt_host);
    FIELD(amqtt_host, abi_version);
    FIELD(amqtt_host, log);
    LAYOUT(amqtt_plugin_descriptor);
    FIELD(amqtt_plugin_descriptor, abi_version);
    FIELD(amqtt_plugin_descriptor, kind);
    FIELD(amqtt_plugin_descriptor, name);
    FIELD(amqtt_plugin_descriptor, create);
    FIELD(amqtt_plugin_descriptor, destroy);
    FIELD(amqtt_plugin_descriptor, authenticate);
    FIELD(amqtt_plugin_descriptor, check_topic);
    CONST(AMQTT_PLUGIN_ABI_VERSION);
    CONST(AMQTT_KIND_AUTH);
    CONST(AMQTT_KIND_TOPIC_CHECK);
    CONST(AMQTT_ANSWER_NO_OPINION);
    CONST(AMQTT_ANSWER_ALLOW);
    CONST(AMQTT_ANSWER_DENY);
    CONST(AMQTT_ACTION_PUBLISH);
    CONST(AMQTT_ACTION_SUBSCRIBE);
    CONST(AMQTT_ACTION_RECEIVE);
    CONST(AMQTT_REPORT_ERROR);
    CONST(AMQTT_REPORT_UNKNOWN_KEY);
    CONST(AMQTT_LOG_ERROR);
    CONST(AMQTT_LOG_WARN);
    CONST(AMQTT_LOG_INFO);
    CONST(AMQTT_LOG_DEBUG);
    printf("AMQTT_PLUGIN_ENTRY_SYMBOL = %s\n", AMQTT_PLUGIN_ENTRY_SYMBOL);
    return 0;
}
"#;

/// What the C program must print, computed from the Rust definitions.
fn expected() -> String {
    let mut out = String::new();
    let mut layout = |name: &str, size: usize, align: usize, fields: &[(&str, usize)]| {
        writeln!(out, "{name} size {size} align {align}").unwrap();
        for (field, offset) in fields {
            writeln!(out, "{name}.{field} {offset}").unwrap();
        }
    };
    layout(
        "amqtt_str",
        size_of::<AbiStr>(),
        align_of::<AbiStr>(),
        &[("ptr", offset_of!(AbiStr, ptr)), ("len", offset_of!(AbiStr, len))],
    );
    layout(
        "amqtt_client",
        size_of::<AbiClient>(),
        align_of::<AbiClient>(),
        &[
            ("client_id", offset_of!(AbiClient, client_id)),
            ("username", offset_of!(AbiClient, username)),
            ("password", offset_of!(AbiClient, password)),
            ("peer", offset_of!(AbiClient, peer)),
            ("cert_subject", offset_of!(AbiClient, cert_subject)),
            ("clean_session", offset_of!(AbiClient, clean_session)),
        ],
    );
    layout(
        "amqtt_host",
        size_of::<AbiHost>(),
        align_of::<AbiHost>(),
        &[("abi_version", offset_of!(AbiHost, abi_version)), ("log", offset_of!(AbiHost, log))],
    );
    layout(
        "amqtt_plugin_descriptor",
        size_of::<PluginDescriptor>(),
        align_of::<PluginDescriptor>(),
        &[
            ("abi_version", offset_of!(PluginDescriptor, abi_version)),
            ("kind", offset_of!(PluginDescriptor, kind)),
            ("name", offset_of!(PluginDescriptor, name)),
            ("create", offset_of!(PluginDescriptor, create)),
            ("destroy", offset_of!(PluginDescriptor, destroy)),
            ("authenticate", offset_of!(PluginDescriptor, authenticate)),
            ("check_topic", offset_of!(PluginDescriptor, check_topic)),
        ],
    );
    for (name, value) in [
        ("AMQTT_PLUGIN_ABI_VERSION", abi::ABI_VERSION),
        ("AMQTT_KIND_AUTH", abi::KIND_AUTH),
        ("AMQTT_KIND_TOPIC_CHECK", abi::KIND_TOPIC_CHECK),
        ("AMQTT_ANSWER_NO_OPINION", abi::ANSWER_NO_OPINION),
        ("AMQTT_ANSWER_ALLOW", abi::ANSWER_ALLOW),
        ("AMQTT_ANSWER_DENY", abi::ANSWER_DENY),
        ("AMQTT_ACTION_PUBLISH", abi::ACTION_PUBLISH),
        ("AMQTT_ACTION_SUBSCRIBE", abi::ACTION_SUBSCRIBE),
        ("AMQTT_ACTION_RECEIVE", abi::ACTION_RECEIVE),
        ("AMQTT_REPORT_ERROR", abi::REPORT_ERROR),
        ("AMQTT_REPORT_UNKNOWN_KEY", abi::REPORT_UNKNOWN_KEY),
        ("AMQTT_LOG_ERROR", abi::LOG_ERROR),
        ("AMQTT_LOG_WARN", abi::LOG_WARN),
        ("AMQTT_LOG_INFO", abi::LOG_INFO),
        ("AMQTT_LOG_DEBUG", abi::LOG_DEBUG),
    ] {
        writeln!(out, "{name} = {value}").unwrap();
    }
    writeln!(out, "AMQTT_PLUGIN_ENTRY_SYMBOL = {}", abi::ENTRY_SYMBOL).unwrap();
    out
}

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Compiles `source` with the system C compiler, strictly (any warning fails), and returns the
/// path of the program.
fn compile(source: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-api-header");
    std::fs::create_dir_all(&dir).unwrap();
    let c_file = dir.join(format!("{name}.c"));
    let program = dir.join(name);
    std::fs::write(&c_file, source).unwrap();
    let output = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I"])
        .arg(include_dir())
        .arg("-o")
        .arg(&program)
        .arg(&c_file)
        .output()
        .expect("cannot run `cc`: a C compiler is needed to check amqtt_plugin.h");
    assert!(output.status.success(), "cc failed on {name}.c:\n{}", String::from_utf8_lossy(&output.stderr));
    program
}

#[test]
fn header_matches_the_rust_abi() {
    let program = compile(PROGRAM, "layout");
    let output = Command::new(&program).output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let expected = expected();
    for (c, rust) in printed.lines().zip(expected.lines()) {
        assert_eq!(c, rust, "amqtt_plugin.h (left) differs from src/abi.rs (right)");
    }
    assert_eq!(printed.lines().count(), expected.lines().count());
}

/// A descriptor filled with functions of the prototypes the header documents compiles without
/// a warning: the header is valid C11 and its function pointer types are what a plugin writes.
#[test]
fn a_plugin_written_against_the_header_compiles_cleanly() {
    let source = r#"
#include "amqtt_plugin.h"
static void *create(const amqtt_host *host, amqtt_str name, amqtt_str settings, amqtt_str dir,
                    amqtt_report_fn report, void *context) {
    (void)host; (void)name; (void)settings; (void)dir; (void)report; (void)context;
    static int instance;
    return &instance;
}
static void destroy(void *instance) { (void)instance; }
static uint32_t authenticate(void *instance, const amqtt_client *client) {
    (void)instance;
    return client->password.ptr ? AMQTT_ANSWER_ALLOW : AMQTT_ANSWER_NO_OPINION;
}
static const amqtt_plugin_descriptor DESCRIPTOR = {
    AMQTT_PLUGIN_ABI_VERSION, AMQTT_KIND_AUTH, "c_auth", create, destroy, authenticate, NULL,
};
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return &DESCRIPTOR; }
int main(void) { return amqtt_plugin_entry()->kind == AMQTT_KIND_AUTH ? 0 : 1; }
"#;
    let program = compile(source, "plugin");
    assert!(Command::new(&program).status().unwrap().success());
}
