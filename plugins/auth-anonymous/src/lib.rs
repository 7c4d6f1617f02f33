//! `auth_anonymous`: the `allow-anonymous` switch of aMQTT's `auth` section.
//!
//! With `allow-anonymous: true` (the default) every client is let in, as in aMQTT. With `false`
//! a client without a username is refused, and a client with one gets no opinion: the password
//! plugins of the chain decide. (aMQTT lets in anyone who sends a username in that case, a hole
//! its own documentation warns about; this plugin does not.)

use amqtt_plugin_api::{
    async_trait, register_plugin, Answer, AuthPlugin, ClientInfo, Plugin, PluginContext, PluginError,
};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(rename = "allow-anonymous", alias = "allow_anonymous", deserialize_with = "amqtt_plugin_api::yaml_bool")]
    allow_anonymous: Option<bool>,
}

#[derive(Debug)]
pub struct AnonymousAuth {
    allow_anonymous: bool,
}

impl Plugin for AnonymousAuth {
    type Settings = Settings;

    fn new(settings: Settings, _context: &PluginContext) -> Result<Self, PluginError> {
        Ok(AnonymousAuth { allow_anonymous: settings.allow_anonymous.unwrap_or(true) })
    }
}

#[async_trait]
impl AuthPlugin for AnonymousAuth {
    async fn authenticate(&self, client: &ClientInfo, _password: Option<&[u8]>) -> Answer {
        match (self.allow_anonymous, &client.username) {
            (true, _) => Answer::Allow,
            (false, None) => Answer::Deny,
            (false, Some(_)) => Answer::NoOpinion,
        }
    }
}

register_plugin!(
    auth,
    "auth_anonymous",
    AnonymousAuth,
    aliases = ["auth.anonymous", "amqtt.plugins.authentication.AnonymousAuthPlugin"]
);

#[cfg(test)]
mod tests {
    use amqtt_plugin_api::abi::block_on;
    use amqtt_plugin_api::parse_settings;

    use super::*;

    fn plugin(yaml: &str) -> AnonymousAuth {
        let value = yaml_serde::from_str(yaml).unwrap();
        let (settings, _) = parse_settings(&value, &PluginContext::default()).unwrap();
        AnonymousAuth::new(settings, &PluginContext::default()).unwrap()
    }

    fn ask(plugin: &AnonymousAuth, username: Option<&str>) -> Answer {
        let client = ClientInfo {
            client_id: "c".into(),
            username: username.map(Into::into),
            peer: "127.0.0.1:1".parse().unwrap(),
            cert_subject: None,
            clean_session: true,
        };
        block_on(plugin.authenticate(&client, None))
    }

    #[test]
    fn allowed_by_default_with_or_without_username() {
        let plugin = plugin("{}");
        assert_eq!(ask(&plugin, None), Answer::Allow);
        assert_eq!(ask(&plugin, Some("alice")), Answer::Allow);
    }

    #[test]
    fn disallowed_denies_anonymous_and_leaves_users_to_other_plugins() {
        for yaml in ["allow-anonymous: false", "allow_anonymous: false"] {
            let plugin = plugin(yaml);
            assert_eq!(ask(&plugin, None), Answer::Deny);
            assert_eq!(ask(&plugin, Some("alice")), Answer::NoOpinion);
        }
    }
}
