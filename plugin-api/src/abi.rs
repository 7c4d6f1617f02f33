//! The C ABI of `.so` plugins (version [`ABI_VERSION`]); `include/amqtt_plugin.h` is the same
//! contract for C.
//!
//! A plugin library exports one symbol, [`ENTRY_SYMBOL`], a function without arguments that
//! returns a pointer to a static [`PluginDescriptor`]. The broker reads `abi_version` first and
//! refuses the library when it differs, so later versions may change everything after it.
//! Only `#[repr(C)]` data crosses the boundary: strings are pointer + length (never Rust
//! `String`s), and memory is freed on the side that allocated it (an instance is destroyed by
//! the plugin's own `destroy`). Every call may come from several broker threads at once.
//!
//! In Rust, [`export_plugin!`](crate::export_plugin) writes all of this: the plugin is the same
//! [`Plugin`] + [`AuthPlugin`]/[`TopicCheckPlugin`] type as a linked-in one. Event plugins are
//! not part of ABI version 1: they must be linked in.

use std::any::Any;
use std::ffi::{c_char, c_void};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use crate::{Action, Answer, AuthPlugin, ClientInfo, Plugin, PluginContext, TopicCheckPlugin};

/// Version of this ABI; a library reporting another one is not loaded.
pub const ABI_VERSION: u32 = 1;
/// Name of the function every plugin library exports.
pub const ENTRY_SYMBOL: &str = "amqtt_plugin_entry";

/// `PluginDescriptor::kind` of an auth plugin (`authenticate` is set).
pub const KIND_AUTH: u32 = 1;
/// `PluginDescriptor::kind` of a topic-check plugin (`check_topic` is set).
pub const KIND_TOPIC_CHECK: u32 = 2;

pub const ANSWER_NO_OPINION: u32 = 0;
pub const ANSWER_ALLOW: u32 = 1;
/// Any value other than the three answers counts as a deny too.
pub const ANSWER_DENY: u32 = 2;

pub const ACTION_PUBLISH: u32 = 1;
pub const ACTION_SUBSCRIBE: u32 = 2;
pub const ACTION_RECEIVE: u32 = 3;

/// `report` of `create`: the plugin cannot be built; the message says why.
pub const REPORT_ERROR: u32 = 1;
/// `report` of `create`: a settings key the plugin does not know; the message is the key.
pub const REPORT_UNKNOWN_KEY: u32 = 2;

pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;

/// A borrowed UTF-8 string or byte string: `ptr` null means absent (`None`), which is not the
/// same as empty. Valid only for the duration of the call it is passed to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AbiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl AbiStr {
    pub const ABSENT: AbiStr = AbiStr { ptr: std::ptr::null(), len: 0 };

    pub fn new(bytes: &[u8]) -> AbiStr {
        AbiStr { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    pub fn from_option(bytes: Option<&[u8]>) -> AbiStr {
        bytes.map_or(AbiStr::ABSENT, AbiStr::new)
    }

    /// # Safety
    /// `ptr` must be null or point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_bytes<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else {
            // SAFETY: per this function's contract.
            Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
        }
    }

    /// # Safety
    /// As [`as_bytes`](Self::as_bytes).
    pub unsafe fn to_string_lossy(self) -> Option<String> {
        // SAFETY: per this function's contract.
        unsafe { self.as_bytes() }.map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }
}

/// The client a call is about. `peer` is the address as text (`192.0.2.7:50112`,
/// `[2001:db8::1]:50112`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AbiClient {
    pub client_id: AbiStr,
    pub username: AbiStr,
    /// Set for `authenticate` only; absent in topic checks.
    pub password: AbiStr,
    pub peer: AbiStr,
    pub cert_subject: AbiStr,
    pub clean_session: u8,
}

/// What the broker offers a plugin for the plugin's whole life.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AbiHost {
    pub abi_version: u32,
    /// Writes `message` to the broker's log at `level` (`LOG_*`), under the plugin's name.
    pub log: unsafe extern "C" fn(level: u32, plugin: AbiStr, message: AbiStr),
}

/// Receives, during `create`, an error or an unknown settings key (`REPORT_*`).
pub type ReportFn = unsafe extern "C" fn(context: *mut c_void, what: u32, message: AbiStr);

/// What [`ENTRY_SYMBOL`] returns a pointer to. Static: the broker never frees it.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// Must be the first field in every version: the broker reads it before anything else.
    pub abi_version: u32,
    /// `KIND_AUTH` or `KIND_TOPIC_CHECK`.
    pub kind: u32,
    /// The plugin's name, NUL-terminated UTF-8: what the YAML enables it by.
    pub name: *const c_char,
    /// Builds an instance from its settings (a YAML mapping as text; `config_dir` is the
    /// folder of the broker's config file, for relative paths). Returns null after reporting
    /// at least one `REPORT_ERROR` when it cannot. `host` outlives every instance.
    pub create: unsafe extern "C" fn(
        host: *const AbiHost,
        name: AbiStr,
        settings_yaml: AbiStr,
        config_dir: AbiStr,
        report: ReportFn,
        report_context: *mut c_void,
    ) -> *mut c_void,
    /// Frees an instance made by `create`.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Returns `ANSWER_*`. Set for `KIND_AUTH`.
    pub authenticate: Option<unsafe extern "C" fn(instance: *mut c_void, client: *const AbiClient) -> u32>,
    /// Returns `ANSWER_*` for `action` (`ACTION_*`) on `topic`. Set for `KIND_TOPIC_CHECK`.
    pub check_topic: Option<
        unsafe extern "C" fn(instance: *mut c_void, client: *const AbiClient, topic: AbiStr, action: u32) -> u32,
    >,
}

// SAFETY: a descriptor is immutable static data; `name` points to a static string.
unsafe impl Sync for PluginDescriptor {}

impl Answer {
    pub fn to_abi(self) -> u32 {
        match self {
            Answer::NoOpinion => ANSWER_NO_OPINION,
            Answer::Allow => ANSWER_ALLOW,
            Answer::Deny => ANSWER_DENY,
        }
    }

    /// Anything but the three known values is a deny: a broken plugin must not let anyone in.
    pub fn from_abi(value: u32) -> Answer {
        match value {
            ANSWER_NO_OPINION => Answer::NoOpinion,
            ANSWER_ALLOW => Answer::Allow,
            _ => Answer::Deny,
        }
    }
}

impl Action {
    pub fn to_abi(self) -> u32 {
        match self {
            Action::Publish => ACTION_PUBLISH,
            Action::Subscribe => ACTION_SUBSCRIBE,
            Action::Receive => ACTION_RECEIVE,
        }
    }

    pub fn from_abi(value: u32) -> Option<Action> {
        match value {
            ACTION_PUBLISH => Some(Action::Publish),
            ACTION_SUBSCRIBE => Some(Action::Subscribe),
            ACTION_RECEIVE => Some(Action::Receive),
            _ => None,
        }
    }
}

/// Generates the entry point of a `.so` plugin. The kind is `auth` or `topic_check`; the name is
/// what the YAML enables it by.
///
/// ```
/// use amqtt_plugin_api::*;
///
/// struct Nobody;
///
/// impl Plugin for Nobody {
///     type Settings = serde::de::IgnoredAny;
///     fn new(_: Self::Settings, _: &PluginContext) -> Result<Self, PluginError> {
///         Ok(Nobody)
///     }
/// }
///
/// #[async_trait]
/// impl TopicCheckPlugin for Nobody {
///     async fn check(&self, _: &ClientInfo, _: &str, _: Action) -> Answer {
///         Answer::Deny
///     }
/// }
///
/// export_plugin!(topic_check, "nobody", Nobody);
/// # fn main() {
/// let descriptor = unsafe { &*amqtt_plugin_entry() };
/// assert_eq!(descriptor.kind, abi::KIND_TOPIC_CHECK);
/// # }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (auth, $name:literal, $plugin:ty) => {
        $crate::export_plugin!(@descriptor $name, $plugin, $crate::abi::KIND_AUTH,
            Some($crate::abi::authenticate::<$plugin>), None);
    };
    (topic_check, $name:literal, $plugin:ty) => {
        $crate::export_plugin!(@descriptor $name, $plugin, $crate::abi::KIND_TOPIC_CHECK,
            None, Some($crate::abi::check_topic::<$plugin>));
    };
    (@descriptor $name:literal, $plugin:ty, $kind:expr, $authenticate:expr, $check_topic:expr) => {
        /// The entry point the broker looks up (see `amqtt_plugin_api::abi`).
        #[no_mangle]
        pub extern "C" fn amqtt_plugin_entry() -> *const $crate::abi::PluginDescriptor {
            static DESCRIPTOR: $crate::abi::PluginDescriptor = $crate::abi::PluginDescriptor {
                abi_version: $crate::abi::ABI_VERSION,
                kind: $kind,
                name: concat!($name, "\0").as_ptr().cast(),
                create: $crate::abi::create::<$plugin>,
                destroy: $crate::abi::destroy::<$plugin>,
                authenticate: $authenticate,
                check_topic: $check_topic,
            };
            &DESCRIPTOR
        }
    };
}

static HOST: OnceLock<(AbiHost, String)> = OnceLock::new();

/// Writes to the broker's log from inside a `.so` plugin (`LOG_*` levels). Outside a `.so`, or
/// before the broker has created the plugin, it writes to stderr.
pub fn log(level: u32, message: &str) {
    match HOST.get() {
        // SAFETY: the host outlives every instance, and both strings outlive the call.
        Some((host, name)) => unsafe {
            (host.log)(level, AbiStr::new(name.as_bytes()), AbiStr::new(message.as_bytes()))
        },
        None => eprintln!("{message}"),
    }
}

/// # Safety
/// Called by the broker through a descriptor made by `export_plugin!`, with valid arguments.
pub unsafe extern "C" fn create<P: Plugin>(
    host: *const AbiHost,
    name: AbiStr,
    settings_yaml: AbiStr,
    config_dir: AbiStr,
    report: ReportFn,
    report_context: *mut c_void,
) -> *mut c_void {
    let say = |what: u32, message: &str| {
        // SAFETY: the broker's callback, with a message that outlives the call.
        unsafe { report(report_context, what, AbiStr::new(message.as_bytes())) }
    };
    let built = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the broker passes valid strings for the duration of this call.
        let (name, settings, dir) = unsafe {
            (name.to_string_lossy().unwrap_or_default(), settings_yaml.as_bytes(), config_dir.to_string_lossy())
        };
        if !host.is_null() {
            // SAFETY: a non-null host points to the broker's AbiHost, which outlives us.
            let _ = HOST.set((unsafe { *host }, name.clone()));
        }
        let value: yaml_serde::Value = match settings {
            Some(text) if !text.is_empty() => {
                yaml_serde::from_slice(text).map_err(|error| format!("settings are not valid YAML: {error}"))?
            }
            _ => yaml_serde::Value::Null,
        };
        let context = PluginContext { plugin_name: name, config_dir: dir.map(PathBuf::from) };
        let (settings, unknown) =
            crate::parse_settings::<P::Settings>(&value, &context).map_err(|error| error.to_string())?;
        for key in unknown {
            say(REPORT_UNKNOWN_KEY, &key);
        }
        P::new(settings, &context).map_err(|error| error.to_string())
    }));
    match built {
        Ok(Ok(plugin)) => Box::into_raw(Box::new(plugin)).cast(),
        Ok(Err(error)) => {
            say(REPORT_ERROR, &error);
            std::ptr::null_mut()
        }
        Err(panic) => {
            say(REPORT_ERROR, &format!("panicked while starting: {}", panic_message(&*panic)));
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `instance` was returned by [`create`] for the same `P` and is not used afterwards.
pub unsafe extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
    if !instance.is_null() {
        // SAFETY: per this function's contract.
        let plugin = unsafe { Box::from_raw(instance.cast::<P>()) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(plugin)));
    }
}

/// # Safety
/// `instance` came from [`create`] for the same `P`; `client` points to a valid [`AbiClient`].
pub unsafe extern "C" fn authenticate<P: Plugin + AuthPlugin>(instance: *mut c_void, client: *const AbiClient) -> u32 {
    let answer = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per this function's contract.
        let (plugin, client) = unsafe { (&*instance.cast::<P>(), &*client) };
        // SAFETY: the client's strings are valid for this call.
        let password = unsafe { client.password.as_bytes() };
        block_on(plugin.authenticate(&unsafe { client_info(client) }, password))
    }));
    answer.map_or_else(|panic| deny_after_panic("authenticate", &*panic), Answer::to_abi)
}

/// # Safety
/// As [`authenticate`], and `topic` is a valid string.
pub unsafe extern "C" fn check_topic<P: Plugin + TopicCheckPlugin>(
    instance: *mut c_void,
    client: *const AbiClient,
    topic: AbiStr,
    action: u32,
) -> u32 {
    let answer = catch_unwind(AssertUnwindSafe(|| {
        let Some(action) = Action::from_abi(action) else { return Answer::Deny };
        // SAFETY: per this function's contract.
        let (plugin, client, topic) = unsafe { (&*instance.cast::<P>(), &*client, topic.to_string_lossy()) };
        block_on(plugin.check(&unsafe { client_info(client) }, &topic.unwrap_or_default(), action))
    }));
    answer.map_or_else(|panic| deny_after_panic("check_topic", &*panic), Answer::to_abi)
}

/// # Safety
/// The client's strings are valid.
unsafe fn client_info(client: &AbiClient) -> ClientInfo {
    // SAFETY: per this function's contract.
    unsafe {
        ClientInfo {
            client_id: client.client_id.to_string_lossy().unwrap_or_default(),
            username: client.username.to_string_lossy(),
            peer: client
                .peer
                .to_string_lossy()
                .and_then(|peer| peer.parse().ok())
                .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            cert_subject: client.cert_subject.to_string_lossy(),
            clean_session: client.clean_session != 0,
        }
    }
}

fn deny_after_panic(call: &str, panic: &(dyn Any + Send)) -> u32 {
    log(LOG_ERROR, &format!("plugin panicked in {call}: {}; answering deny", panic_message(panic)));
    ANSWER_DENY
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs a plugin's future to completion on the calling thread: the broker calls a `.so` from a
/// blocking thread of its own, so waiting here holds up nobody. A plugin whose futures need a
/// runtime (tokio I/O) must bring one.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
