//! The password file: one `user:hash` line per user, `#` comments and blank lines allowed,
//! whitespace around a line ignored (aMQTT's and mosquitto's format).
//!
//! The whole file is checked when the plugin is built: a line that is not `user:hash` with a
//! hash of a supported format stops start-up, naming the file and the line, rather than
//! silently locking that user out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::hash::{HashError, StoredHash};

/// The users of a password file and their hashes.
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, Arc<StoredHash>>,
    /// The hash of the file's first entry, verified (and its answer ignored) for a user the file
    /// does not know, so that such a user costs as long as a known one with a wrong password.
    decoy: Option<Arc<StoredHash>>,
}

/// Why a password file could not be used. Messages name the file and line, never a hash.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}; check `password-file` in the auth section")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("password file {path} line {line}: expected `user:hash`; create entries with `amqtt_passwd`")]
    NotAnEntry { path: PathBuf, line: usize },
    #[error("password file {path} line {line}: {source}; set the password again with `amqtt_passwd`")]
    BadHash { path: PathBuf, line: usize, source: HashError },
}

/// What one line of a password file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// Blank or a `#` comment.
    Blank,
    /// `user:hash`, split at the first `:` (the hash is not checked here).
    Entry { user: &'a str, hash: &'a str },
    /// Anything else: no `:`, or nothing before it.
    Invalid,
}

impl<'a> Line<'a> {
    pub fn classify(line: &'a str) -> Line<'a> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Line::Blank;
        }
        match line.split_once(':') {
            Some((user, hash)) if !user.is_empty() => Line::Entry { user, hash },
            _ => Line::Invalid,
        }
    }
}

impl Users {
    /// Reads and checks the password file at `path`.
    pub fn load(path: &Path) -> Result<Users, PasswordFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read { path: path.into(), source })?;
        Users::parse(&text, path)
    }

    /// Parses the text of a password file; `path` is for messages. When a user appears twice,
    /// the last line wins (as in aMQTT), with a warning.
    pub fn parse(text: &str, path: &Path) -> Result<Users, PasswordFileError> {
        let mut hashes = HashMap::new();
        let mut lines_of = HashMap::new();
        let mut decoy = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let (user, hash) = match Line::classify(line) {
                Line::Blank => continue,
                Line::Invalid => return Err(PasswordFileError::NotAnEntry { path: path.into(), line: number }),
                Line::Entry { user, hash } => (user, hash),
            };
            let hash = StoredHash::parse(hash).map_err(|source| PasswordFileError::BadHash {
                path: path.into(),
                line: number,
                source,
            })?;
            if let Some(previous) = lines_of.insert(user.to_owned(), number) {
                tracing::warn!(
                    "password file {}: user {user:?} on line {previous} and again on line {number}; line {number} wins",
                    path.display()
                );
            }
            let hash = Arc::new(hash);
            decoy.get_or_insert_with(|| hash.clone());
            hashes.insert(user.to_owned(), hash);
        }
        Ok(Users { hashes, decoy })
    }

    pub fn get(&self, user: &str) -> Option<&Arc<StoredHash>> {
        self.hashes.get(user)
    }

    /// A hash of this file to verify in place of an unknown user's: the file's first, so of a
    /// format and cost the file's users have. None when the file is empty (nobody to hide).
    pub fn decoy(&self) -> Option<&Arc<StoredHash>> {
        self.decoy.as_ref()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2b$04$qJ1dWmViDt1VJp5ROlv5eeI9B61d.k43GPUCgp6K8BRL.6llZiGha";
    const SHA512_CRYPT: &str =
        "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";

    fn parse(text: &str) -> Result<Users, PasswordFileError> {
        Users::parse(text, Path::new("/etc/amqtt/passwd"))
    }

    #[test]
    fn comments_blank_lines_and_surrounding_whitespace_are_ignored() {
        let text = format!("# users\n\n   \n  alice:{BCRYPT}  \n\t# bob:disabled\nbob:{SHA512_CRYPT}\r\n");
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.get("alice").unwrap().format(), "bcrypt");
        assert_eq!(users.get("bob").unwrap().format(), "sha512-crypt");
        assert!(users.get("# bob").is_none());
    }

    #[test]
    fn an_empty_file_has_no_users() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nobody yet\n").unwrap().is_empty());
    }

    #[test]
    fn the_decoy_is_the_first_entry_and_absent_without_entries() {
        let users = parse(&format!("# users\nbob:{SHA512_CRYPT}\nalice:{BCRYPT}\n")).unwrap();
        assert_eq!(users.decoy().unwrap().format(), "sha512-crypt");
        assert!(parse("# nobody\n").unwrap().decoy().is_none());
    }

    #[test]
    fn the_last_line_of_a_user_wins() {
        let users = parse(&format!("alice:{SHA512_CRYPT}\nalice:{BCRYPT}\n")).unwrap();
        assert_eq!(users.get("alice").unwrap().format(), "bcrypt");
    }

    #[test]
    fn a_line_without_colon_names_its_line_number() {
        let error = parse(&format!("# header\nalice:{BCRYPT}\n\njust-a-secret-value\n")).err().unwrap();
        assert!(matches!(error, PasswordFileError::NotAnEntry { line: 4, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("/etc/amqtt/passwd line 4"), "{message}");
        assert!(!message.contains("just-a-secret-value"), "{message}");
    }

    #[test]
    fn an_empty_user_name_is_not_an_entry() {
        let error = parse(&format!(":{BCRYPT}\n")).err().unwrap();
        assert!(matches!(error, PasswordFileError::NotAnEntry { line: 1, .. }), "{error}");
    }

    #[test]
    fn an_unknown_hash_names_its_line_number_and_not_the_hash() {
        let error = parse(&format!("alice:{BCRYPT}\nbob:plaintext-password\n")).err().unwrap();
        assert!(matches!(error, PasswordFileError::BadHash { line: 2, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("line 2") && message.contains("not a supported password hash"), "{message}");
        assert!(!message.contains("plaintext-password"), "{message}");
    }

    #[test]
    fn a_damaged_hash_names_its_line_number_and_not_the_hash() {
        let damaged = &BCRYPT[..40];
        let error = parse(&format!("\n\nalice:{damaged}\n")).err().unwrap();
        assert!(matches!(error, PasswordFileError::BadHash { line: 3, .. }), "{error}");
        assert!(!error.to_string().contains(&damaged[7..]), "{error}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = Users::load(Path::new("/nonexistent/amqtt/passwd")).err().unwrap();
        assert!(error.to_string().contains("/nonexistent/amqtt/passwd"), "{error}");
    }
}
