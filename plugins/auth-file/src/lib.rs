//! The built-in auth plugin `auth_file` (aMQTT's `amqtt.plugins.authentication.FileAuthPlugin`):
//! clients authenticate with a user name and a password checked against a password file, and
//! the `amqtt_passwd` command that manages that file.
//!
//! ```yaml
//! auth:
//!   plugins: [auth_file]
//!   password-file: ./passwd
//! ```
//!
//! The file holds `user:hash` lines. Hashes may be argon2id (what aMQTT 0.12 and
//! `amqtt_passwd` write), sha512-crypt `$6$` (older aMQTT, hbmqtt), bcrypt, or mosquitto_passwd's
//! `$7$` and `$6$`, so a password file from any of those brokers works unchanged.

pub mod hash;
pub mod password_file;
mod plugin;
mod settings;
mod verifier;

pub use hash::{hash_argon2id, HashError, StoredHash};
pub use password_file::{Line, PasswordFileError, Users};
pub use plugin::FileAuth;
pub use settings::Settings;
pub use verifier::Verifier;

amqtt_plugin_api::register_plugin!(
    auth,
    "auth_file",
    FileAuth,
    aliases = ["amqtt.plugins.authentication.FileAuthPlugin"]
);
