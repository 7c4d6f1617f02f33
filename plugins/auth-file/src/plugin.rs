//! The `auth_file` plugin: lets in the users of a password file who give their password.
//!
//! Answers, per aMQTT's FileAuthPlugin and the broker's chain rules:
//! no username, or a user not in the file: no opinion (another plugin may know them);
//! a user in the file without a password or with a wrong one: deny; the right one: allow.
//!
//! A user the file does not know who gives a password costs a verification all the same (of
//! the file's first hash, its answer ignored): otherwise the time to answer would tell who is
//! in the file. The comparisons themselves are constant-time (see `hash`).

use std::path::PathBuf;
use std::sync::Arc;

use amqtt_plugin_api::{async_trait, Answer, AuthPlugin, ClientInfo, Plugin, PluginContext, PluginError};

use crate::password_file::Users;
use crate::settings::Settings;
use crate::verifier::Verifier;

pub struct FileAuth {
    users: Arc<Users>,
    /// The password file, for logs; `None` when none is configured.
    path: Option<PathBuf>,
    verifier: Verifier,
}

impl FileAuth {
    /// The plugin for an already loaded set of users (embedding and tests).
    pub fn with_users(users: Users, verifier: Verifier) -> FileAuth {
        FileAuth { users: Arc::new(users), path: None, verifier }
    }

    /// Hash verifications started so far (see [`Verifier::verifications`]).
    pub fn verifications(&self) -> u64 {
        self.verifier.verifications()
    }
}

impl Plugin for FileAuth {
    type Settings = Settings;

    fn new(settings: Settings, context: &PluginContext) -> Result<Self, PluginError> {
        let Some(path) = settings.password_file else {
            // Info, not a warning: without `auth.plugins` every auth plugin runs, this one
            // included, and the default configuration should start without complaint.
            tracing::info!(
                "{} has no password file (`password-file` in the auth section): it has no opinion on anyone",
                context.plugin_name
            );
            return Ok(FileAuth::with_users(Users::default(), Verifier::per_core()));
        };
        let path = context.resolve_path(path);
        let users = Users::load(&path).map_err(|error| PluginError::Failed(error.to_string()))?;
        tracing::info!("{} user(s) loaded from {}", users.len(), path.display());
        Ok(FileAuth { users: Arc::new(users), path: Some(path), verifier: Verifier::per_core() })
    }
}

#[async_trait]
impl AuthPlugin for FileAuth {
    async fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Answer {
        let Some(username) = client.username.as_deref() else { return Answer::NoOpinion };
        let Some(hash) = self.users.get(username) else {
            if let (Some(decoy), Some(password)) = (self.users.decoy(), password) {
                self.verifier.verify(decoy.clone(), password.to_vec()).await;
            }
            tracing::debug!(client_id = %client.client_id, "user {username:?} is not in the password file");
            return Answer::NoOpinion;
        };
        let Some(password) = password else {
            tracing::debug!(client_id = %client.client_id, "user {username:?} gave no password");
            return Answer::Deny;
        };
        if self.verifier.verify(hash.clone(), password.to_vec()).await {
            tracing::debug!(client_id = %client.client_id, "user {username:?} authenticated ({})", hash.format());
            Answer::Allow
        } else {
            tracing::debug!(client_id = %client.client_id, "wrong password for user {username:?}");
            Answer::Deny
        }
    }
}

impl std::fmt::Debug for FileAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuth").field("path", &self.path).field("users", &self.users.len()).finish()
    }
}
