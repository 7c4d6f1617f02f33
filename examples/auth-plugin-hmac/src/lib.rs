//! `auth_hmac`: an amqtt-rs auth plugin built as a `.so` (see README.md for the whole path,
//! from writing it to connecting a client).
//!
//! A client is let in when its password is the lowercase hex HMAC-SHA256 of its username under
//! the secret `hmac-secret` of the broker's `auth:` section. Devices can then be given their
//! password without the broker keeping a password file: whoever holds the secret computes it.
//!
//! The plugin is an ordinary [`Plugin`] + [`AuthPlugin`] type; `export_plugin!` turns it into
//! the C entry point the broker looks for.

use amqtt_plugin_api::{
    abi, async_trait, export_plugin, Answer, AuthPlugin, ClientInfo, Plugin, PluginContext, PluginError,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The keys this plugin reads from the `auth:` section. Everything is optional for serde
/// because the section is shared with other auth plugins; [`HmacAuth::new`] says what is
/// required.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    #[serde(rename = "hmac-secret", alias = "hmac_secret")]
    hmac_secret: Option<String>,
}

pub struct HmacAuth {
    secret: Vec<u8>,
}

impl Plugin for HmacAuth {
    type Settings = Settings;

    fn new(settings: Settings, _context: &PluginContext) -> Result<Self, PluginError> {
        match settings.hmac_secret {
            Some(secret) if !secret.is_empty() => Ok(HmacAuth { secret: secret.into_bytes() }),
            _ => Err(PluginError::InvalidSetting {
                key: "hmac-secret".into(),
                reason: "required: set `auth.hmac-secret` in the broker's config (or `hmac-secret` in this plugin's \
                         entry of `plugins:`) to the secret the passwords are computed with"
                    .into(),
            }),
        }
    }
}

#[async_trait]
impl AuthPlugin for HmacAuth {
    async fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Answer {
        // Without both there is nothing to check: other plugins of the chain decide.
        let (Some(username), Some(password)) = (&client.username, password) else { return Answer::NoOpinion };
        let Some(given) = decode_lowercase_hex(password) else {
            abi::log(abi::LOG_DEBUG, &format!("password of {username} is not a lowercase hex HMAC: deny"));
            return Answer::Deny;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(username.as_bytes());
        // `verify_slice` compares in constant time: how long it takes says nothing about how
        // much of a guess was right.
        match mac.verify_slice(&given) {
            Ok(()) => Answer::Allow,
            Err(_) => {
                abi::log(abi::LOG_DEBUG, &format!("wrong HMAC for {username}: deny"));
                Answer::Deny
            }
        }
    }
}

export_plugin!(auth, "auth_hmac", HmacAuth);

/// The bytes that `text` spells in lowercase hex, or None when it is not exactly that.
fn decode_lowercase_hex(text: &[u8]) -> Option<Vec<u8>> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqtt_plugin_api::abi::block_on;

    fn plugin(secret: &str) -> HmacAuth {
        HmacAuth::new(Settings { hmac_secret: Some(secret.into()) }, &PluginContext::default()).unwrap()
    }

    fn ask(plugin: &HmacAuth, username: Option<&str>, password: Option<&str>) -> Answer {
        let client = ClientInfo {
            client_id: "c1".into(),
            username: username.map(Into::into),
            peer: "127.0.0.1:5000".parse().unwrap(),
            cert_subject: None,
            clean_session: true,
        };
        block_on(plugin.authenticate(&client, password.map(str::as_bytes)))
    }

    /// RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    const RFC_4231_2: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn the_hmac_of_the_username_lets_the_client_in() {
        let plugin = plugin("Jefe");
        assert_eq!(ask(&plugin, Some("what do ya want for nothing?"), Some(RFC_4231_2)), Answer::Allow);
    }

    #[test]
    fn anything_else_is_denied() {
        let plugin = plugin("Jefe");
        let user = Some("what do ya want for nothing?");
        assert_eq!(ask(&plugin, Some("someone else"), Some(RFC_4231_2)), Answer::Deny, "another user's HMAC");
        assert_eq!(ask(&plugin, user, Some(&RFC_4231_2.to_uppercase())), Answer::Deny, "uppercase hex");
        assert_eq!(ask(&plugin, user, Some(&RFC_4231_2[..62])), Answer::Deny, "truncated");
        assert_eq!(ask(&plugin, user, Some("not hex")), Answer::Deny);
        assert_eq!(ask(&plugin, user, Some("")), Answer::Deny);
        assert_eq!(ask(&self::plugin("other secret"), user, Some(RFC_4231_2)), Answer::Deny, "another secret");
    }

    #[test]
    fn no_opinion_without_password_or_username() {
        let plugin = plugin("Jefe");
        assert_eq!(ask(&plugin, Some("alice"), None), Answer::NoOpinion);
        assert_eq!(ask(&plugin, None, Some(RFC_4231_2)), Answer::NoOpinion);
    }

    /// What `create` of the exported entry point reports for the settings `yaml`, and whether it
    /// made an instance: the path the broker takes.
    fn create(yaml: &str) -> (bool, Vec<(u32, String)>) {
        unsafe extern "C" fn collect(context: *mut std::ffi::c_void, what: u32, message: abi::AbiStr) {
            let reports = unsafe { &mut *context.cast::<Vec<(u32, String)>>() };
            reports.push((what, unsafe { message.to_string_lossy() }.unwrap_or_default()));
        }
        unsafe extern "C" fn no_log(_level: u32, _plugin: abi::AbiStr, _message: abi::AbiStr) {}
        let host = abi::AbiHost { abi_version: abi::ABI_VERSION, log: no_log };
        let mut reports: Vec<(u32, String)> = Vec::new();
        let descriptor = unsafe { &*amqtt_plugin_entry() };
        let instance = unsafe {
            (descriptor.create)(
                &host,
                abi::AbiStr::new(b"auth_hmac"),
                abi::AbiStr::new(yaml.as_bytes()),
                abi::AbiStr::ABSENT,
                collect,
                (&raw mut reports).cast(),
            )
        };
        let created = !instance.is_null();
        if created {
            unsafe { (descriptor.destroy)(instance) };
        }
        (created, reports)
    }

    #[test]
    fn the_secret_is_required_in_either_spelling() {
        let unknown = (abi::REPORT_UNKNOWN_KEY, "allow-anonymous".to_string());
        assert_eq!(create("hmac-secret: s\nallow-anonymous: false"), (true, vec![unknown.clone()]));
        assert_eq!(create("hmac_secret: s"), (true, vec![]));
        let (created, reports) = create("allow-anonymous: false");
        assert!(!created);
        assert_eq!(reports[0], unknown);
        assert_eq!(reports[1].0, abi::REPORT_ERROR);
        assert!(reports[1].1.contains("set `auth.hmac-secret`"), "{reports:?}");
    }

    #[test]
    fn the_entry_point_names_an_auth_plugin() {
        let descriptor = unsafe { &*amqtt_plugin_entry() };
        assert_eq!((descriptor.abi_version, descriptor.kind), (abi::ABI_VERSION, abi::KIND_AUTH));
        assert_eq!(unsafe { std::ffi::CStr::from_ptr(descriptor.name) }, c"auth_hmac");
    }
}
