//! The two macros a plugin author uses, exercised the way the broker uses what they generate.

use std::ffi::{c_void, CStr};

use amqtt_plugin_api::abi::{self, AbiClient, AbiStr};
use amqtt_plugin_api::{
    async_trait, export_plugin, register_plugin, registrations, Answer, AuthPlugin, ClientInfo, Instance, Kind, Plugin,
    PluginContext, PluginError, Value,
};

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Settings {
    secret: Option<String>,
}

/// Allows the client whose password is the configured secret; panics for user "boom".
struct SecretAuth {
    secret: String,
}

impl Plugin for SecretAuth {
    type Settings = Settings;
    fn new(settings: Settings, _context: &PluginContext) -> Result<Self, PluginError> {
        let secret = settings.secret.ok_or_else(|| PluginError::Failed("secret is required".into()))?;
        Ok(SecretAuth { secret })
    }
}

#[async_trait]
impl AuthPlugin for SecretAuth {
    async fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Answer {
        if client.username.as_deref() == Some("boom") {
            panic!("boom");
        }
        match password {
            None => Answer::NoOpinion,
            Some(p) if p == self.secret.as_bytes() => Answer::Allow,
            Some(_) => Answer::Deny,
        }
    }
}

register_plugin!(auth, "secret_auth", SecretAuth, aliases = ["some.python.SecretAuthPlugin"]);
export_plugin!(auth, "secret_auth", SecretAuth);

fn client(username: &str) -> ClientInfo {
    ClientInfo {
        client_id: "c1".into(),
        username: Some(username.into()),
        peer: "127.0.0.1:5000".parse().unwrap(),
        cert_subject: None,
        clean_session: true,
    }
}

#[test]
fn registered_plugin_is_found_by_name_and_alias_and_built() {
    let registration = registrations().find(|r| r.answers_to("some.python.SecretAuthPlugin")).unwrap();
    assert_eq!(registration.name, "secret_auth");
    assert_eq!(registration.kind, Kind::Auth);
    let value: Value = yaml_serde::from_str("secret: s3cret\nother: 1").unwrap();
    let built = (registration.build)(&value, &PluginContext::default()).unwrap();
    assert_eq!(built.unknown_keys, ["other"]);
    let Instance::Auth(plugin) = built.instance else { panic!("not an auth plugin") };
    let answer = abi::block_on(plugin.authenticate(&client("alice"), Some(b"s3cret")));
    assert_eq!(answer, Answer::Allow);
    let error = (registration.build)(&Value::Null, &PluginContext::default()).unwrap_err();
    assert_eq!(error.to_string(), "secret is required");
}

unsafe extern "C" fn collect(context: *mut c_void, what: u32, message: AbiStr) {
    let reports = unsafe { &mut *context.cast::<Vec<(u32, String)>>() };
    reports.push((what, unsafe { message.to_string_lossy() }.unwrap()));
}

unsafe extern "C" fn no_log(_level: u32, _plugin: AbiStr, _message: AbiStr) {}

#[test]
fn exported_descriptor_creates_answers_and_survives_a_panic() {
    let descriptor = unsafe { &*amqtt_plugin_entry() };
    assert_eq!(descriptor.abi_version, abi::ABI_VERSION);
    assert_eq!(descriptor.kind, abi::KIND_AUTH);
    assert_eq!(unsafe { CStr::from_ptr(descriptor.name) }.to_str().unwrap(), "secret_auth");
    let host = abi::AbiHost { abi_version: abi::ABI_VERSION, log: no_log };
    let mut reports: Vec<(u32, String)> = Vec::new();
    let create = |settings: &str, reports: &mut Vec<(u32, String)>| unsafe {
        (descriptor.create)(
            &host,
            AbiStr::new(b"secret_auth"),
            AbiStr::new(settings.as_bytes()),
            AbiStr::ABSENT,
            collect,
            (reports as *mut Vec<(u32, String)>).cast(),
        )
    };
    assert!(create("nothing: here", &mut reports).is_null());
    assert_eq!(
        reports,
        [(abi::REPORT_UNKNOWN_KEY, "nothing".into()), (abi::REPORT_ERROR, "secret is required".into())]
    );

    let instance = create("secret: s3cret", &mut Vec::new());
    assert!(!instance.is_null());
    let authenticate = descriptor.authenticate.unwrap();
    let ask = |username: &str, password: Option<&[u8]>| {
        let abi_client = AbiClient {
            client_id: AbiStr::new(b"c1"),
            username: AbiStr::new(username.as_bytes()),
            password: AbiStr::from_option(password),
            peer: AbiStr::new(b"127.0.0.1:5000"),
            cert_subject: AbiStr::ABSENT,
            clean_session: 1,
        };
        Answer::from_abi(unsafe { authenticate(instance, &abi_client) })
    };
    assert_eq!(ask("alice", Some(b"s3cret")), Answer::Allow);
    assert_eq!(ask("alice", Some(b"wrong")), Answer::Deny);
    assert_eq!(ask("alice", None), Answer::NoOpinion);
    assert_eq!(ask("boom", Some(b"s3cret")), Answer::Deny, "a panic counts as deny");
    unsafe { (descriptor.destroy)(instance) };
}
