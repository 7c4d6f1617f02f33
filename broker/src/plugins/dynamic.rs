//! `.so` plugins: loading a library built against the C ABI of `amqtt_plugin_api::abi` (or
//! `amqtt_plugin.h`), checking it is one, and wrapping its instances in the plugin traits so
//! the chains use them like linked-in plugins.
//!
//! Why it looks like this:
//!
//! - A library is checked before anything of it is trusted: the ABI version is read alone
//!   (later versions may change every other field), then the function pointers the kind needs,
//!   then the name. A file that fails is skipped with a warning by [`scan`], never fatal: a
//!   stale plugin in the folder must not stop the broker.
//! - A loaded library is never unloaded: an instance, a function pointer or a thread the
//!   plugin started may outlive any handle we keep, and calling into unmapped code crashes.
//! - Calls into a library are synchronous and may block, so they run on tokio's blocking pool,
//!   never on the threads that serve sessions: a slow plugin delays only its own client.
//!   `check_many` crosses over once per batch rather than once per topic.

use std::ffi::{c_void, CStr};
use std::fmt;
use std::mem::offset_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amqtt_plugin_api::abi::{self, AbiClient, AbiHost, AbiStr, PluginDescriptor};
use amqtt_plugin_api::{
    async_trait, Action, Answer, AuthPlugin, Built, ClientInfo, Instance, Kind, PluginContext, PluginError,
    TopicCheckPlugin, Value,
};
use tracing::{debug, error, info, warn};

/// The version of `amqtt-plugin-api` this broker is built with (the workspace shares one
/// version), for the "rebuild it against" advice.
const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a file is not a usable plugin library.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(
        "not a loadable library ({0}): remove it from the plugins folder, or rebuild it as a shared library for this \
         machine (a Rust crate with crate-type = [\"cdylib\"], or `cc -shared -fPIC`)"
    )]
    NotLoadable(#[source] libloading::Error),
    #[error(
        "no `{}` function, so not an amqtt plugin: a Rust plugin gets it from `export_plugin!`, a C plugin defines it \
         as amqtt_plugin.h declares; remove the file from the plugins folder if it is something else",
        abi::ENTRY_SYMBOL
    )]
    NoEntrySymbol,
    #[error("`{}` returned a null descriptor: it must return a pointer to a static descriptor", abi::ENTRY_SYMBOL)]
    NullDescriptor,
    #[error(
        "built for plugin ABI version {found}, this broker speaks version {}: rebuild it against amqtt-plugin-api \
         {API_VERSION}",
        abi::ABI_VERSION
    )]
    AbiMismatch { found: u32 },
    #[error(
        "unknown plugin kind {kind}: plugin ABI version {} has auth ({}) and topic-check ({}); fix the descriptor's kind",
        abi::ABI_VERSION,
        abi::KIND_AUTH,
        abi::KIND_TOPIC_CHECK
    )]
    UnknownKind { kind: u32 },
    #[error("its descriptor has no `{function}` function, which {kind}: fill it in and rebuild")]
    MissingFunction { function: &'static str, kind: &'static str },
    #[error("its name {0}: the descriptor's name must be a non-empty, NUL-terminated UTF-8 string")]
    BadName(&'static str),
}

/// A plugin library that passed the checks: what the configuration can enable by `name`.
#[derive(Clone)]
pub(crate) struct DynamicPlugin {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) path: PathBuf,
    /// Static data of a library that is never unloaded.
    descriptor: &'static PluginDescriptor,
}

impl fmt::Debug for DynamicPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicPlugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("path", &self.path)
            .finish()
    }
}

type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;
type AuthenticateFn = unsafe extern "C" fn(*mut c_void, *const AbiClient) -> u32;
type CheckTopicFn = unsafe extern "C" fn(*mut c_void, *const AbiClient, AbiStr, u32) -> u32;

impl DynamicPlugin {
    /// Loads the library at `path` and checks that it is a plugin this broker can run.
    pub(crate) fn load(path: &Path) -> Result<DynamicPlugin, LoadError> {
        let library = open(path).map_err(LoadError::NotLoadable)?;
        // Never unloaded (see the module comment), even when a check below fails: its
        // initialisers have run, and nothing tells what they left behind.
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        // SAFETY: the symbol is declared with the entry point's type by the ABI.
        let entry: EntryFn =
            *unsafe { library.get::<EntryFn>(abi::ENTRY_SYMBOL.as_bytes()) }.map_err(|_| LoadError::NoEntrySymbol)?;
        // SAFETY: the entry point takes nothing and returns a pointer.
        let raw = unsafe { entry() };
        // SAFETY: `raw` is the library's static descriptor; the checks say how much of it to read.
        let descriptor = unsafe { check_descriptor(raw) }?;
        let kind = match descriptor.kind {
            abi::KIND_AUTH if descriptor.authenticate.is_some() => Kind::Auth,
            abi::KIND_AUTH => {
                return Err(LoadError::MissingFunction { function: "authenticate", kind: "an auth plugin needs" })
            }
            abi::KIND_TOPIC_CHECK if descriptor.check_topic.is_some() => Kind::TopicCheck,
            abi::KIND_TOPIC_CHECK => {
                return Err(LoadError::MissingFunction { function: "check_topic", kind: "a topic-check plugin needs" })
            }
            kind => return Err(LoadError::UnknownKind { kind }),
        };
        if descriptor.name.is_null() {
            return Err(LoadError::BadName("is null"));
        }
        // SAFETY: a non-null name is a NUL-terminated string in the library's static data.
        let name = unsafe { CStr::from_ptr(descriptor.name) };
        let name = name.to_str().map_err(|_| LoadError::BadName("is not valid UTF-8"))?;
        if name.is_empty() {
            return Err(LoadError::BadName("is empty"));
        }
        Ok(DynamicPlugin { name: name.to_string(), kind, path: path.to_path_buf(), descriptor })
    }

    /// Creates an instance with `settings` (handed to the plugin as YAML text).
    pub(crate) fn build(&self, settings: &Value, context: &PluginContext) -> Result<Built, PluginError> {
        let yaml = if settings.is_null() {
            String::new()
        } else {
            yaml_serde::to_string(settings)
                .map_err(|error| PluginError::Failed(format!("cannot hand the settings over as YAML: {error}")))?
        };
        let name = if context.plugin_name.is_empty() { &self.name } else { &context.plugin_name };
        let config_dir = context.config_dir.as_ref().map(|dir| dir.to_string_lossy().into_owned());
        let mut reports = Reports::default();
        // SAFETY: every pointer is valid for the call: `HOST` is static, the strings and
        // `reports` outlive it, and `report` matches `ReportFn`.
        let instance = unsafe {
            (self.descriptor.create)(
                &HOST,
                AbiStr::new(name.as_bytes()),
                AbiStr::new(yaml.as_bytes()),
                AbiStr::from_option(config_dir.as_deref().map(str::as_bytes)),
                report,
                (&raw mut reports).cast(),
            )
        };
        // Destroyed on drop, including when an error was reported alongside an instance.
        let handle = (!instance.is_null())
            .then(|| Arc::new(Handle { name: name.clone(), descriptor: self.descriptor, instance }));
        let handle = match handle {
            Some(handle) if reports.errors.is_empty() => handle,
            _ if reports.errors.is_empty() => {
                return Err(PluginError::Failed("the plugin created no instance and reported no error".into()))
            }
            _ => return Err(PluginError::Failed(reports.errors.join("; "))),
        };
        // `load` accepted the library only with the function its kind needs.
        let instance = match (self.kind, self.descriptor.authenticate, self.descriptor.check_topic) {
            (Kind::Auth, Some(authenticate), _) => Instance::Auth(Arc::new(DynamicAuth { handle, authenticate })),
            (Kind::TopicCheck, _, Some(check_topic)) => {
                Instance::TopicCheck(Arc::new(DynamicTopicCheck { handle, check_topic }))
            }
            (kind, _, _) => return Err(PluginError::Failed(format!("{kind} plugin without its function"))),
        };
        Ok(Built { instance, unknown_keys: reports.unknown_keys })
    }
}

fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: loading runs the library's initialisers: files in the plugins folder are trusted
    // code, like the broker binary itself.
    #[cfg(unix)]
    unsafe {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // Resolve every symbol now: a library missing one is refused here, with dlopen's
        // message, instead of crashing the broker at its first call.
        Library::open(Some(path), RTLD_NOW | RTLD_LOCAL).map(Into::into)
    }
    // SAFETY: as above.
    #[cfg(not(unix))]
    unsafe {
        libloading::Library::new(path)
    }
}

/// Checks a descriptor in the order the ABI allows: the version alone first, then the function
/// pointers that cannot be null, before the whole struct is read as version 1's.
///
/// # Safety
/// `raw` is null or points to a descriptor that lives as long as the program (its library is
/// never unloaded) and starts with a `u32` version.
unsafe fn check_descriptor(raw: *const PluginDescriptor) -> Result<&'static PluginDescriptor, LoadError> {
    if raw.is_null() {
        return Err(LoadError::NullDescriptor);
    }
    // SAFETY: every version of the descriptor starts with its version.
    let version = unsafe { raw.cast::<u32>().read_unaligned() };
    if version != abi::ABI_VERSION {
        return Err(LoadError::AbiMismatch { found: version });
    }
    for (function, offset) in
        [("create", offset_of!(PluginDescriptor, create)), ("destroy", offset_of!(PluginDescriptor, destroy))]
    {
        // SAFETY: a version-1 descriptor has a pointer at this offset; it is read as a raw
        // pointer because a null fn pointer is not a valid Rust value.
        let pointer = unsafe { raw.byte_add(offset).cast::<*const c_void>().read_unaligned() };
        if pointer.is_null() {
            return Err(LoadError::MissingFunction { function, kind: "every plugin needs" });
        }
    }
    // SAFETY: a version-1 descriptor whose non-optional fields are set, per the contract.
    Ok(unsafe { &*raw })
}

/// Loads every `*.so` file of `dir` (not its subfolders), in file name order. A file that is
/// not a usable plugin is skipped with a warning; so is a second file providing a name already
/// loaded. A missing folder is no error: most brokers have no `.so` plugins.
pub(crate) fn scan(dir: &Path) -> Vec<DynamicPlugin> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            debug!(dir = %dir.display(), "no plugins folder: no .so plugin loaded");
            return Vec::new();
        }
        Err(error) => {
            warn!(dir = %dir.display(), %error, "cannot read the plugins folder: no .so plugin loaded");
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => files.push(entry.path()),
            Err(error) => warn!(dir = %dir.display(), %error, "cannot read an entry of the plugins folder"),
        }
    }
    files.retain(|path| path.extension().is_some_and(|ext| ext == "so") && path.is_file());
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut plugins: Vec<DynamicPlugin> = Vec::new();
    for path in files {
        match DynamicPlugin::load(&path) {
            Ok(plugin) => match plugins.iter().find(|loaded| loaded.name == plugin.name) {
                Some(first) => warn!(
                    file = %path.display(),
                    plugin = %plugin.name,
                    kept = %first.path.display(),
                    "plugin file skipped: an earlier file already provides a plugin of this name"
                ),
                None => {
                    info!(file = %path.display(), plugin = %plugin.name, kind = %plugin.kind, "plugin file loaded");
                    plugins.push(plugin);
                }
            },
            Err(error) => warn!(file = %path.display(), reason = %error, "plugin file skipped"),
        }
    }
    plugins
}

/// What every plugin is offered: logging into the broker's log.
static HOST: AbiHost = AbiHost { abi_version: abi::ABI_VERSION, log: host_log };

/// `AbiHost::log`: a plugin's message, under its name, in the broker's log.
unsafe extern "C" fn host_log(level: u32, plugin: AbiStr, message: AbiStr) {
    // SAFETY: the plugin passes strings valid for this call.
    let (plugin, message) = unsafe { (plugin.to_string_lossy(), message.to_string_lossy()) };
    let (plugin, message) = (plugin.unwrap_or_default(), message.unwrap_or_default());
    // Unwinding out of an `extern "C"` function aborts: a panicking log subscriber must not.
    let _ = catch_unwind(AssertUnwindSafe(|| match level {
        abi::LOG_ERROR => error!(target: "amqtt_broker::plugins", plugin = %plugin, "{message}"),
        abi::LOG_WARN => warn!(target: "amqtt_broker::plugins", plugin = %plugin, "{message}"),
        abi::LOG_INFO => info!(target: "amqtt_broker::plugins", plugin = %plugin, "{message}"),
        _ => debug!(target: "amqtt_broker::plugins", plugin = %plugin, "{message}"),
    }));
}

/// What a plugin reported during `create`.
#[derive(Default)]
struct Reports {
    errors: Vec<String>,
    unknown_keys: Vec<String>,
}

/// `ReportFn`: collects into the [`Reports`] that `context` points to.
unsafe extern "C" fn report(context: *mut c_void, what: u32, message: AbiStr) {
    if context.is_null() {
        return;
    }
    // SAFETY: `context` is the `Reports` that `build` passed to `create`, which is running.
    let reports = unsafe { &mut *context.cast::<Reports>() };
    // SAFETY: the plugin passes a string valid for this call.
    let message = unsafe { message.to_string_lossy() }.unwrap_or_default();
    match what {
        abi::REPORT_UNKNOWN_KEY => reports.unknown_keys.push(message),
        // Anything else is taken as an error: a plugin's complaint must not be lost.
        _ => reports.errors.push(message),
    }
}

/// An instance made by a plugin's `create`, destroyed by its `destroy` once nothing uses it.
struct Handle {
    name: String,
    descriptor: &'static PluginDescriptor,
    instance: *mut c_void,
}

// SAFETY: the ABI requires a plugin's functions to work from any thread, concurrently, on the
// same instance (amqtt_plugin.h, "Threads"); we only ever hand the pointer back to them.
unsafe impl Send for Handle {}
// SAFETY: as for Send.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: made by this descriptor's `create`; the last reference is going, so no call
        // on it is running or will run.
        unsafe { (self.descriptor.destroy)(self.instance) }
    }
}

/// Runs a call into a library on tokio's blocking pool; `failed` is the answer when the call
/// cannot complete (a panic on our side of the boundary). Outside a tokio runtime there is no
/// session thread to protect, and the call runs where it is.
async fn off_thread<T: Send + 'static>(
    handle: &Handle,
    call: &'static str,
    failed: impl FnOnce() -> T,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return work() };
    match runtime.spawn_blocking(work).await {
        Ok(answer) => answer,
        Err(error) => {
            error!(plugin = %handle.name, call, %error, "plugin call failed: answering deny");
            failed()
        }
    }
}

/// A copy of the client for a call on another thread, from which the call's [`AbiClient`] is
/// made.
struct OwnedClient {
    client_id: String,
    username: Option<String>,
    password: Option<Vec<u8>>,
    peer: String,
    cert_subject: Option<String>,
    clean_session: bool,
}

impl OwnedClient {
    fn new(client: &ClientInfo, password: Option<&[u8]>) -> OwnedClient {
        OwnedClient {
            client_id: client.client_id.clone(),
            username: client.username.clone(),
            password: password.map(<[u8]>::to_vec),
            peer: client.peer.to_string(),
            cert_subject: client.cert_subject.clone(),
            clean_session: client.clean_session,
        }
    }

    /// Borrows `self`: valid as long as it is.
    fn as_abi(&self) -> AbiClient {
        let text = |s: &Option<String>| AbiStr::from_option(s.as_deref().map(str::as_bytes));
        AbiClient {
            client_id: AbiStr::new(self.client_id.as_bytes()),
            username: text(&self.username),
            password: AbiStr::from_option(self.password.as_deref()),
            peer: AbiStr::new(self.peer.as_bytes()),
            cert_subject: text(&self.cert_subject),
            clean_session: u8::from(self.clean_session),
        }
    }
}

/// An auth plugin from a library.
pub(crate) struct DynamicAuth {
    handle: Arc<Handle>,
    authenticate: AuthenticateFn,
}

#[async_trait]
impl AuthPlugin for DynamicAuth {
    async fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Answer {
        let owned = OwnedClient::new(client, password);
        let (handle, authenticate) = (self.handle.clone(), self.authenticate);
        off_thread(
            &self.handle,
            "authenticate",
            || Answer::Deny,
            move || {
                let client = owned.as_abi();
                // SAFETY: the instance is alive (`handle`), `client` and its strings outlive the call.
                Answer::from_abi(unsafe { authenticate(handle.instance, &client) })
            },
        )
        .await
    }
}

/// A topic-check plugin from a library.
pub(crate) struct DynamicTopicCheck {
    handle: Arc<Handle>,
    check_topic: CheckTopicFn,
}

#[async_trait]
impl TopicCheckPlugin for DynamicTopicCheck {
    async fn check(&self, client: &ClientInfo, topic: &str, action: Action) -> Answer {
        self.check_many(client, &[topic], action).await.pop().unwrap_or(Answer::Deny)
    }

    async fn check_many(&self, client: &ClientInfo, topics: &[&str], action: Action) -> Vec<Answer> {
        let owned = OwnedClient::new(client, None);
        let topics: Vec<String> = topics.iter().map(|topic| topic.to_string()).collect();
        let count = topics.len();
        let (handle, check_topic) = (self.handle.clone(), self.check_topic);
        off_thread(
            &self.handle,
            "check_topic",
            || vec![Answer::Deny; count],
            move || {
                let client = owned.as_abi();
                let action = action.to_abi();
                let ask = |topic: &String| {
                    // SAFETY: the instance is alive (`handle`); `client`, `topic` and their
                    // strings outlive the call.
                    let answer =
                        unsafe { check_topic(handle.instance, &client, AbiStr::new(topic.as_bytes()), action) };
                    Answer::from_abi(answer)
                };
                topics.iter().map(ask).collect()
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;

    /// Allows password "letmein", denies any other (and user "eve" whatever her password),
    /// has no opinion without a password. Reports an unknown key `extra`, fails on settings
    /// that mention `broken`, logs through the host, and counts its live instances.
    const GOOD_AUTH: &str = r#"
#include <stdlib.h>
#include <string.h>
#include "amqtt_plugin.h"

int live_instances = 0;

struct instance { const amqtt_host *host; };

static int contains(amqtt_str text, const char *word) {
    size_t n = strlen(word);
    for (size_t i = 0; text.ptr && i + n <= text.len; i++)
        if (memcmp(text.ptr + i, word, n) == 0) return 1;
    return 0;
}

static amqtt_str str(const char *s) { amqtt_str r = { (const uint8_t *)s, strlen(s) }; return r; }

static void *create(const amqtt_host *host, amqtt_str name, amqtt_str settings, amqtt_str dir,
                    amqtt_report_fn report, void *context) {
    (void)dir;
    if (contains(settings, "extra:")) report(context, AMQTT_REPORT_UNKNOWN_KEY, str("extra"));
    if (contains(settings, "broken")) { report(context, AMQTT_REPORT_ERROR, str("the settings say broken")); return NULL; }
    struct instance *instance = malloc(sizeof *instance);
    instance->host = host;
    host->log(AMQTT_LOG_INFO, name, str("c plugin created"));
    live_instances++;
    return instance;
}

static void destroy(void *instance) { free(instance); live_instances--; }

static uint32_t authenticate(void *instance, const amqtt_client *client) {
    (void)instance;
    if (client->username.ptr && client->username.len == 3 && memcmp(client->username.ptr, "eve", 3) == 0)
        return AMQTT_ANSWER_DENY;
    if (!client->password.ptr) return AMQTT_ANSWER_NO_OPINION;
    if (client->password.len == 7 && memcmp(client->password.ptr, "letmein", 7) == 0) return AMQTT_ANSWER_ALLOW;
    return AMQTT_ANSWER_DENY;
}

static const amqtt_plugin_descriptor DESCRIPTOR = {
    AMQTT_PLUGIN_ABI_VERSION, AMQTT_KIND_AUTH, "c_auth", create, destroy, authenticate, NULL,
};
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return &DESCRIPTOR; }
"#;

    /// Allows publishing and subscribing under `public/`, denies the rest, has no opinion on
    /// receiving. Topic `wait` blocks until the test sets `release` (at most 3 s, then deny),
    /// counting in `waiting` that it started.
    const TOPIC_CHECK: &str = r#"
#define _POSIX_C_SOURCE 199309L
#include <string.h>
#include <time.h>
#include "amqtt_plugin.h"

int waiting = 0;
int release = 0;

static void *create(const amqtt_host *host, amqtt_str name, amqtt_str settings, amqtt_str dir,
                    amqtt_report_fn report, void *context) {
    (void)host; (void)name; (void)settings; (void)dir; (void)report; (void)context;
    static int instance;
    return &instance;
}

static void destroy(void *instance) { (void)instance; }

static uint32_t check_topic(void *instance, const amqtt_client *client, amqtt_str topic, uint32_t action) {
    (void)instance; (void)client;
    if (topic.len == 4 && memcmp(topic.ptr, "wait", 4) == 0) {
        __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST);
        struct timespec pause = { 0, 1000000 };
        for (int i = 0; i < 3000; i++) {
            if (__atomic_load_n(&release, __ATOMIC_SEQ_CST)) return AMQTT_ANSWER_ALLOW;
            nanosleep(&pause, NULL);
        }
        return AMQTT_ANSWER_DENY;
    }
    if (action == AMQTT_ACTION_RECEIVE) return AMQTT_ANSWER_NO_OPINION;
    if (topic.len >= 7 && memcmp(topic.ptr, "public/", 7) == 0) return AMQTT_ANSWER_ALLOW;
    return AMQTT_ANSWER_DENY;
}

static const amqtt_plugin_descriptor DESCRIPTOR = {
    AMQTT_PLUGIN_ABI_VERSION, AMQTT_KIND_TOPIC_CHECK, "c_topics", create, destroy, NULL, check_topic,
};
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return &DESCRIPTOR; }
"#;

    /// A descriptor of some future ABI: nothing after the version may be read.
    const WRONG_ABI: &str = r#"
#include "amqtt_plugin.h"
static const amqtt_plugin_descriptor DESCRIPTOR = { 999, 77, NULL, NULL, NULL, NULL, NULL };
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return &DESCRIPTOR; }
"#;

    const NO_ENTRY: &str = "int not_a_plugin(void) { return 1; }\n";

    const NULL_DESCRIPTOR: &str = r#"
#include "amqtt_plugin.h"
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) { return NULL; }
"#;

    /// An auth plugin with the given name (a C expression) and, unless `authenticate` is false,
    /// its `authenticate` function.
    fn auth_without(name: &str, authenticate: bool) -> String {
        format!(
            r#"
#include "amqtt_plugin.h"
static void *create(const amqtt_host *h, amqtt_str n, amqtt_str s, amqtt_str d, amqtt_report_fn r, void *c) {{
    (void)h; (void)n; (void)s; (void)d; (void)r; (void)c; return NULL;
}}
static void destroy(void *instance) {{ (void)instance; }}
uint32_t authenticate(void *i, const amqtt_client *c);
uint32_t authenticate(void *i, const amqtt_client *c) {{ (void)i; (void)c; return AMQTT_ANSWER_ALLOW; }}
static const amqtt_plugin_descriptor DESCRIPTOR = {{
    AMQTT_PLUGIN_ABI_VERSION, AMQTT_KIND_AUTH, {name}, create, destroy, {authenticate}, NULL,
}};
const amqtt_plugin_descriptor *amqtt_plugin_entry(void) {{ return &DESCRIPTOR; }}
"#,
            authenticate = if authenticate { "authenticate" } else { "NULL" }
        )
    }

    /// Compiles `source` into `dir/{file}` as a shared library, against the plugin header.
    fn compile(dir: &Path, file: &str, source: &str) -> PathBuf {
        let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/include");
        let c_file = dir.join(format!("{file}.c"));
        std::fs::write(&c_file, source).unwrap();
        let library = dir.join(file);
        let output = Command::new("cc")
            .args(["-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(include)
            .arg("-o")
            .arg(&library)
            .arg(&c_file)
            .output()
            .expect("cannot run `cc`: these tests need a C compiler");
        assert!(output.status.success(), "cc failed on {file}:\n{}", String::from_utf8_lossy(&output.stderr));
        std::fs::remove_file(c_file).unwrap();
        library
    }

    fn client(username: Option<&str>) -> ClientInfo {
        ClientInfo {
            client_id: "c1".into(),
            username: username.map(Into::into),
            peer: "127.0.0.1:5000".parse().unwrap(),
            cert_subject: None,
            clean_session: true,
        }
    }

    fn context() -> PluginContext {
        PluginContext { plugin_name: "c_auth".into(), config_dir: None }
    }

    fn yaml(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    /// The text of everything logged (without ANSI colours) while `run` runs.
    fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        (result, text)
    }

    fn live_instances(path: &Path) -> i32 {
        // SAFETY: the test library defines `live_instances` as an int; opening it again only
        // adds a reference to the loaded copy.
        unsafe {
            let library = libloading::Library::new(path).unwrap();
            let count = library.get::<*const AtomicI32>(b"live_instances").unwrap();
            (**count).load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn c_auth_plugin_loads_and_answers_off_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = compile(dir.path(), "good.so", GOOD_AUTH);
        let plugin = DynamicPlugin::load(&path).unwrap();
        assert_eq!((plugin.name.as_str(), plugin.kind, plugin.path.as_path()), ("c_auth", Kind::Auth, path.as_path()));

        let (built, log) = logged(|| plugin.build(&yaml("allow-anonymous: false\nextra: 1"), &context()));
        let built = built.unwrap();
        assert_eq!(built.unknown_keys, ["extra"]);
        assert!(log.contains("c plugin created") && log.contains("plugin=c_auth"), "host log not forwarded: {log}");
        assert!(log.contains("INFO amqtt_broker::plugins"), "not logged at the plugin's level and target: {log}");
        assert_eq!(live_instances(&path), 1);

        let Instance::Auth(auth) = built.instance else { panic!("not an auth instance") };
        assert_eq!(auth.authenticate(&client(Some("alice")), Some(b"letmein")).await, Answer::Allow);
        assert_eq!(auth.authenticate(&client(Some("alice")), Some(b"wrong")).await, Answer::Deny);
        assert_eq!(auth.authenticate(&client(Some("alice")), Some(b"")).await, Answer::Deny, "empty is not absent");
        assert_eq!(auth.authenticate(&client(Some("alice")), None).await, Answer::NoOpinion);
        assert_eq!(auth.authenticate(&client(Some("eve")), Some(b"letmein")).await, Answer::Deny);
        assert_eq!(auth.authenticate(&client(None), Some(b"letmein")).await, Answer::Allow);

        drop(auth);
        assert_eq!(live_instances(&path), 0, "dropping the last reference destroys the instance");
    }

    #[test]
    fn a_reported_error_fails_the_build_with_the_plugins_message() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = DynamicPlugin::load(&compile(dir.path(), "good.so", GOOD_AUTH)).unwrap();
        let error = plugin.build(&yaml("mode: broken"), &context()).unwrap_err();
        assert_eq!(error, PluginError::Failed("the settings say broken".into()));
        assert!(plugin.build(&Value::Null, &context()).is_ok(), "no settings at all is an empty text");
    }

    #[tokio::test]
    async fn c_topic_check_plugin_answers_each_topic_of_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = DynamicPlugin::load(&compile(dir.path(), "topics.so", TOPIC_CHECK)).unwrap();
        assert_eq!((plugin.name.as_str(), plugin.kind), ("c_topics", Kind::TopicCheck));
        let Instance::TopicCheck(check) = plugin.build(&Value::Null, &context()).unwrap().instance else {
            panic!("not a topic-check instance")
        };
        let alice = client(Some("alice"));
        let answers = check.check_many(&alice, &["public/a", "private/b", "public/c"], Action::Publish).await;
        assert_eq!(answers, [Answer::Allow, Answer::Deny, Answer::Allow]);
        assert_eq!(check.check(&alice, "private/b", Action::Subscribe).await, Answer::Deny);
        assert_eq!(check.check(&alice, "public/a", Action::Receive).await, Answer::NoOpinion);
    }

    /// A call that blocks until the runtime's own thread releases it: it can only complete if
    /// it runs on another thread, since the test's runtime has a single thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_call_does_not_block_the_calling_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = compile(dir.path(), "topics.so", TOPIC_CHECK);
        let plugin = DynamicPlugin::load(&path).unwrap();
        let Instance::TopicCheck(check) = plugin.build(&Value::Null, &context()).unwrap().instance else {
            panic!("not a topic-check instance")
        };
        // SAFETY: the test library defines both as ints; it stays loaded.
        let (waiting, release) = unsafe {
            let library = libloading::Library::new(&path).unwrap();
            let waiting: *const AtomicI32 = *library.get(b"waiting").unwrap();
            let release: *const AtomicI32 = *library.get(b"release").unwrap();
            (&*waiting, &*release)
        };
        let call = tokio::spawn(async move { check.check(&client(Some("alice")), "wait", Action::Publish).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while waiting.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the plugin was never called");
            tokio::task::yield_now().await;
        }
        release.store(1, Ordering::SeqCst);
        assert_eq!(call.await.unwrap(), Answer::Allow, "the call ran on the runtime's thread and timed out");
    }

    #[test]
    fn wrong_abi_version_is_refused_before_anything_else_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let error = DynamicPlugin::load(&compile(dir.path(), "old.so", WRONG_ABI)).unwrap_err();
        assert!(matches!(error, LoadError::AbiMismatch { found: 999 }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "built for plugin ABI version 999, this broker speaks version 1: rebuild it against amqtt-plugin-api \
                 {API_VERSION}"
            )
        );
    }

    #[test]
    fn library_without_the_entry_symbol_is_not_a_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let error = DynamicPlugin::load(&compile(dir.path(), "other.so", NO_ENTRY)).unwrap_err();
        assert!(matches!(error, LoadError::NoEntrySymbol), "{error:?}");
        assert!(error.to_string().contains("amqtt_plugin_entry"), "{error}");
    }

    #[test]
    fn garbage_file_is_not_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.so");
        std::fs::write(&path, "this is not a shared library\n").unwrap();
        let error = DynamicPlugin::load(&path).unwrap_err();
        assert!(matches!(error, LoadError::NotLoadable(_)), "{error:?}");
        assert!(error.to_string().starts_with("not a loadable library ("), "{error}");
    }

    #[test]
    fn broken_descriptors_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let load = |file: &str, source: &str| DynamicPlugin::load(&compile(dir.path(), file, source)).unwrap_err();
        assert!(matches!(load("null.so", NULL_DESCRIPTOR), LoadError::NullDescriptor));
        let error = load("no_fn.so", &auth_without("\"no_fn\"", false));
        assert!(matches!(error, LoadError::MissingFunction { function: "authenticate", .. }), "{error:?}");
        assert!(matches!(load("null_name.so", &auth_without("NULL", true)), LoadError::BadName("is null")));
        assert!(matches!(load("empty.so", &auth_without("\"\"", true)), LoadError::BadName("is empty")));
        let error = load("latin1.so", &auth_without("\"caf\\xe9\"", true));
        assert!(matches!(error, LoadError::BadName("is not valid UTF-8")), "{error:?}");
        let error = load("kind.so", &auth_without("\"k\"", true).replace("AMQTT_KIND_AUTH", "7"));
        assert!(matches!(error, LoadError::UnknownKind { kind: 7 }), "{error:?}");
    }

    #[test]
    fn scan_keeps_only_the_good_plugins_and_says_why_about_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let good = compile(dir.path(), "b_good.so", GOOD_AUTH);
        compile(dir.path(), "a_old.so", WRONG_ABI);
        compile(dir.path(), "c_other.so", NO_ENTRY);
        std::fs::write(dir.path().join("d_garbage.so"), "not a library").unwrap();
        std::fs::copy(&good, dir.path().join("e_same_name.so")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not looked at").unwrap();
        std::fs::create_dir(dir.path().join("sub.so")).unwrap();

        let (plugins, log) = logged(|| scan(dir.path()));
        let found: Vec<_> = plugins.iter().map(|p| (p.name.as_str(), p.path.clone())).collect();
        assert_eq!(found, [("c_auth", good)]);
        let warning = |file: &str| {
            log.lines().find(|line| line.contains("WARN") && line.contains(file)).unwrap_or_else(|| panic!("{log}"))
        };
        assert!(warning("a_old.so").contains("ABI version 999"), "{log}");
        assert!(warning("c_other.so").contains("amqtt_plugin_entry"), "{log}");
        assert!(warning("d_garbage.so").contains("not a loadable library"), "{log}");
        assert!(warning("e_same_name.so").contains("already provides"), "{log}");
        assert!(!log.contains("notes.txt") && !log.contains("sub.so"), "{log}");
    }

    #[test]
    fn missing_folder_is_no_plugins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan(&dir.path().join("plugins")).is_empty());
    }
}
