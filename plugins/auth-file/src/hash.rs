//! The password hash formats a password file may hold, recognised by their prefix, checked when
//! the file is read (so a damaged line stops start-up instead of locking a user out later) and
//! verified in constant time.
//!
//! Several generations of tools write these files, and a file moved from one to ours must keep
//! working: aMQTT 0.12 writes argon2id, older aMQTT and hbmqtt wrote sha512-crypt (passlib),
//! pwdlib and htpasswd write bcrypt, mosquitto_passwd writes `$7$` (and `$6$` before 2.0).

use std::fmt;

use argon2::password_hash::phc;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64ct::{Base64, Base64ShaCrypt, Encoding};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// argon2id settings of aMQTT 0.12 (argon2-cffi's `PasswordHasher()` defaults, RFC 9106's
/// low-memory profile): 64 MiB, 3 passes, 4 lanes, 32-byte output, 16-byte salt.
pub const ARGON2_M_COST: u32 = 65536;
pub const ARGON2_T_COST: u32 = 3;
pub const ARGON2_P_COST: u32 = 4;
pub const ARGON2_OUTPUT_LEN: usize = 32;

/// One user's stored password hash, parsed and checked.
///
/// `Debug` names the format only: a hash never reaches a log.
#[derive(Clone)]
pub enum StoredHash {
    /// PHC string `$argon2id$v=19$m=...,t=...,p=...$salt$hash` (also `$argon2i$`, `$argon2d$`).
    Argon2(phc::PasswordHash),
    /// `$6$[rounds=N$]salt$hash` (sha512-crypt) or `$5$...` (sha256-crypt), as glibc and passlib
    /// write them; kept as text and verified by sha-crypt.
    ShaCrypt(String),
    /// `$2a$`, `$2b$` or `$2y$` + cost + salt and hash, kept as text and verified by bcrypt.
    Bcrypt(String),
    /// mosquitto_passwd's `$7$iterations$salt$hash`: PBKDF2-HMAC-SHA512 over the decoded salt,
    /// salt and hash in standard padded base64.
    MosquittoPbkdf2 { iterations: u32, salt: Vec<u8>, hash: Vec<u8> },
    /// mosquitto_passwd's `$6$salt$hash` before 2.0: SHA-512 of password then salt, standard
    /// padded base64 (told apart from sha512-crypt by its 88-character, `==`-ended hash).
    MosquittoSha512 { salt: Vec<u8>, hash: [u8; 64] },
}

/// Why a hash string was refused. Messages never quote the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error(
        "not a supported password hash (expected argon2id `$argon2id$...`, sha512-crypt `$6$...`, \
         bcrypt `$2b$...` or mosquitto `$7$...`)"
    )]
    UnknownFormat,
    #[error("malformed {format} hash: {reason}")]
    Malformed { format: &'static str, reason: &'static str },
}

impl StoredHash {
    /// Recognises the format of `text` by its prefix and checks that it is well formed.
    pub fn parse(text: &str) -> Result<StoredHash, HashError> {
        if text.starts_with("$argon2") {
            parse_argon2(text)
        } else if let Some(rest) = text.strip_prefix("$7$") {
            parse_mosquitto_pbkdf2(rest)
        } else if let Some(rest) = text.strip_prefix("$6$") {
            if is_mosquitto_sha512(rest) {
                parse_mosquitto_sha512(rest)
            } else {
                parse_sha_crypt(text, rest, 64)
            }
        } else if let Some(rest) = text.strip_prefix("$5$") {
            parse_sha_crypt(text, rest, 32)
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|prefix| text.starts_with(prefix)) {
            parse_bcrypt(text)
        } else {
            Err(HashError::UnknownFormat)
        }
    }

    /// Whether `password` matches. CPU-heavy by design (tens to hundreds of milliseconds):
    /// call it off the threads that serve clients. Every comparison is constant-time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Argon2(hash) => Argon2::default().verify_password(password, hash).is_ok(),
            StoredHash::ShaCrypt(hash) => {
                sha_crypt::ShaCrypt::default().verify_password(password, hash.as_str()).is_ok()
            }
            StoredHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            StoredHash::MosquittoPbkdf2 { iterations, salt, hash } => {
                let mut computed = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                computed.ct_eq(hash).into()
            }
            StoredHash::MosquittoSha512 { salt, hash } => {
                let computed = Sha512::new().chain_update(password).chain_update(salt).finalize();
                computed.as_slice().ct_eq(hash).into()
            }
        }
    }

    /// The format's name, for logs and messages.
    pub fn format(&self) -> &'static str {
        match self {
            StoredHash::Argon2(_) => "argon2",
            StoredHash::ShaCrypt(hash) if hash.starts_with("$5$") => "sha256-crypt",
            StoredHash::ShaCrypt(_) => "sha512-crypt",
            StoredHash::Bcrypt(_) => "bcrypt",
            StoredHash::MosquittoPbkdf2 { .. } => "mosquitto $7$",
            StoredHash::MosquittoSha512 { .. } => "mosquitto $6$",
        }
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredHash({})", self.format())
    }
}

/// Hashes `password` as aMQTT 0.12 does: argon2id v19, m=65536, t=3, p=4, a random 16-byte
/// salt, in PHC form (`$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>`).
pub fn hash_argon2id(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let params = argon2::Params::new(ARGON2_M_COST, ARGON2_T_COST, ARGON2_P_COST, Some(ARGON2_OUTPUT_LEN))
        .map_err(|_| argon2::password_hash::Error::ParamsInvalid)?;
    let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    Ok(argon2.hash_password(password)?.to_string())
}

fn parse_argon2(text: &str) -> Result<StoredHash, HashError> {
    let malformed = |reason| HashError::Malformed { format: "argon2", reason };
    let hash = phc::PasswordHash::new(text).map_err(|_| malformed("not a valid PHC string"))?;
    argon2::Algorithm::try_from(hash.algorithm.as_str()).map_err(|_| malformed("unknown argon2 variant"))?;
    if let Some(version) = hash.version {
        argon2::Version::try_from(version).map_err(|_| malformed("unknown version"))?;
    }
    argon2::Params::try_from(&hash).map_err(|_| malformed("invalid m, t or p parameters"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(malformed("salt or hash missing"));
    }
    Ok(StoredHash::Argon2(hash))
}

/// `rest` is what follows `$6$` or `$5$`: `[rounds=N$]salt$hash`.
fn parse_sha_crypt(text: &str, rest: &str, output_len: usize) -> Result<StoredHash, HashError> {
    let format = if output_len == 64 { "sha512-crypt" } else { "sha256-crypt" };
    let malformed = |reason| HashError::Malformed { format, reason };
    let fields: Vec<&str> = rest.split('$').collect();
    let (rounds, hash) = match fields.as_slice() {
        [_salt, hash] => (None, *hash),
        [rounds, _salt, hash] => (Some(*rounds), *hash),
        _ => return Err(malformed("expected [rounds=N$]salt$hash")),
    };
    if let Some(rounds) = rounds {
        if !rounds.starts_with("rounds=") || rounds.parse::<sha_crypt::Params>().is_err() {
            return Err(malformed("rounds must be rounds=N with N from 1000 to 999999999"));
        }
    }
    let mut buf = [0u8; 64];
    match Base64ShaCrypt::decode(hash, &mut buf) {
        Ok(decoded) if decoded.len() == output_len => Ok(StoredHash::ShaCrypt(text.to_owned())),
        _ => Err(malformed("the hash part is not a crypt-base64 digest of the right length")),
    }
}

fn parse_bcrypt(text: &str) -> Result<StoredHash, HashError> {
    let malformed = |reason| HashError::Malformed { format: "bcrypt", reason };
    let parts: bcrypt::HashParts = text.parse().map_err(|_| malformed("expected $2b$NN$ and 53 characters"))?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(malformed("cost must be from 04 to 31"));
    }
    Ok(StoredHash::Bcrypt(text.to_owned()))
}

/// `rest` is what follows `$7$`: `iterations$salt$hash`.
fn parse_mosquitto_pbkdf2(rest: &str) -> Result<StoredHash, HashError> {
    let malformed = |reason| HashError::Malformed { format: "mosquitto $7$", reason };
    let [iterations, salt, hash] = rest.split('$').collect::<Vec<_>>()[..] else {
        return Err(malformed("expected $7$iterations$salt$hash"));
    };
    let iterations = match iterations.parse::<u32>() {
        Ok(n) if n > 0 => n,
        _ => return Err(malformed("iterations must be a positive number")),
    };
    let salt = decode_standard(salt).ok_or_else(|| malformed("the salt is not base64"))?;
    let hash = decode_standard(hash).ok_or_else(|| malformed("the hash is not base64"))?;
    if salt.is_empty() || hash.is_empty() {
        return Err(malformed("empty salt or hash"));
    }
    Ok(StoredHash::MosquittoPbkdf2 { iterations, salt, hash })
}

/// mosquitto's `$6$` hash field is 64 bytes in padded standard base64 (88 characters ending in
/// `==`); sha512-crypt's is 86 characters of crypt-base64, which has no `=`.
fn is_mosquitto_sha512(rest: &str) -> bool {
    rest.split('$').nth(1).is_some_and(|hash| hash.len() == 88 && hash.ends_with("=="))
}

fn parse_mosquitto_sha512(rest: &str) -> Result<StoredHash, HashError> {
    let malformed = |reason| HashError::Malformed { format: "mosquitto $6$", reason };
    let [salt, hash] = rest.split('$').collect::<Vec<_>>()[..] else {
        return Err(malformed("expected $6$salt$hash"));
    };
    let salt = decode_standard(salt).ok_or_else(|| malformed("the salt is not base64"))?;
    let hash = decode_standard(hash).and_then(|hash| <[u8; 64]>::try_from(hash).ok());
    let hash = hash.ok_or_else(|| malformed("the hash is not a base64 SHA-512 digest"))?;
    Ok(StoredHash::MosquittoSha512 { salt, hash })
}

fn decode_standard(text: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; text.len()];
    let len = Base64::decode(text, &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    //! Each vector was produced by the reference implementation named beside it, for the
    //! password `hunter2`, and is checked in unchanged.

    use super::*;

    const PASSWORD: &[u8] = b"hunter2";

    /// argon2-cffi 25.1 `PasswordHasher().hash("hunter2")`: what aMQTT 0.12 writes.
    const ARGON2ID_AMQTT: &str =
        "$argon2id$v=19$m=65536,t=3,p=4$HgncBE3Q2TGUssLgs+hB/Q$y7Vs24I0b+aKoXCbtS+x+jEarf77YZMN4kbck+E4HKA";
    /// argon2-cffi 25.1 `PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)`.
    const ARGON2ID_SMALL: &str =
        "$argon2id$v=19$m=1024,t=1,p=1$S1ntg1x0xMzMZ+5KLqR6Qw$cgLdT5Snqk/PEQRB60LtbyRiEr2bDtzomuKQTRSBI3g";
    /// `openssl passwd -6 -salt saltsalt hunter2` (implicit 5000 rounds).
    const SHA512_CRYPT_OPENSSL: &str =
        "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";
    /// passlib 1.7 `sha512_crypt.using(rounds=10000, salt="ZpsUbdsVWwxIQAxA")`.
    const SHA512_CRYPT_PASSLIB: &str = "$6$rounds=10000$ZpsUbdsVWwxIQAxA$XsQhsiPJYxdga.1l6p1fy5Z0jpzuSdpimgSBvmtaPfQA6etEwRetFrxcSg/bMu5TVW777.uVxcA0R9BwXytiH0";
    /// Python bcrypt 5.0 `hashpw(b"hunter2", gensalt(rounds=4))`.
    const BCRYPT_2B: &str = "$2b$04$qJ1dWmViDt1VJp5ROlv5eeI9B61d.k43GPUCgp6K8BRL.6llZiGha";
    /// Python bcrypt 5.0 `hashpw(b"hunter2", gensalt(rounds=4, prefix=b"2a"))`.
    const BCRYPT_2A: &str = "$2a$04$WdCJ5ZYVCEzU89zScINwCuIvPjff6XvV65zED78i1wY5jkQzSJ9l.";
    /// `mosquitto_passwd -c -b m.pw alice hunter2` (mosquitto 2.0 default, 101 iterations).
    const MOSQUITTO_7: &str = "$7$101$ez9cOKSBhmhTwjho$Kx5FkB5/tmzp+AsXyobjTsYz3yes4PlZzDzFIBzCHgo+SST3T9JHkX6br0oJ4cddoMnFmLjKymtaKid8vTmbMQ==";
    /// `mosquitto_passwd -H sha512-pbkdf2 -I 1000 -b m.pw bob hunter2`.
    const MOSQUITTO_7_1000: &str = "$7$1000$fJ8/eBmNK7s/oWzp$6e+qNrINhh/LJi+qXnWJ8xpmoCsBm9CmEXvko/Ur54BWJGp6Mfui/wTIAG2rwu4pVzbPnByCn8R1XR9t1MaD1Q==";
    /// `mosquitto_passwd -H sha512 -b m.pw carol hunter2` (mosquitto 1.6's format).
    const MOSQUITTO_6: &str =
        "$6$8d9SBEi6FYrpD26J$nkU1pgRUMXudzCBJ2inkrW/h7OriSX2MdpuF9nPlMF1wRB17edalfRhEZiREkR4wVWH7BlJsB9vmReMMRBuGsg==";

    fn check(vector: &str, format: &str) {
        let hash = StoredHash::parse(vector).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(hash.format(), format);
        assert!(hash.verify(PASSWORD), "{format}: right password refused");
        assert!(!hash.verify(b"hunter3"), "{format}: wrong password accepted");
        assert!(!hash.verify(b""), "{format}: empty password accepted");
    }

    #[test]
    fn argon2id_as_written_by_amqtt_0_12() {
        check(ARGON2ID_AMQTT, "argon2");
    }

    #[test]
    fn argon2id_with_other_parameters() {
        check(ARGON2ID_SMALL, "argon2");
    }

    #[test]
    fn sha512_crypt_from_openssl() {
        check(SHA512_CRYPT_OPENSSL, "sha512-crypt");
    }

    #[test]
    fn sha512_crypt_with_rounds_from_passlib() {
        check(SHA512_CRYPT_PASSLIB, "sha512-crypt");
    }

    #[test]
    fn bcrypt_2b_and_2a() {
        check(BCRYPT_2B, "bcrypt");
        check(BCRYPT_2A, "bcrypt");
    }

    #[test]
    fn bcrypt_2y_is_2b_under_another_name() {
        check(&BCRYPT_2B.replacen("$2b$", "$2y$", 1), "bcrypt");
    }

    #[test]
    fn mosquitto_pbkdf2() {
        check(MOSQUITTO_7, "mosquitto $7$");
        check(MOSQUITTO_7_1000, "mosquitto $7$");
    }

    #[test]
    fn mosquitto_sha512_is_told_apart_from_sha512_crypt() {
        check(MOSQUITTO_6, "mosquitto $6$");
    }

    #[test]
    fn written_hash_has_amqtt_0_12_form_and_verifies() {
        let text = hash_argon2id(PASSWORD).unwrap();
        assert!(text.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"), "{text}");
        let fields: Vec<&str> = text.split('$').collect();
        assert_eq!(fields[4].len(), 22, "16-byte salt in unpadded base64");
        assert_eq!(fields[5].len(), 43, "32-byte hash in unpadded base64");
        check(&text, "argon2");
        assert_ne!(text, hash_argon2id(PASSWORD).unwrap(), "each hash has its own salt");
    }

    #[test]
    fn unknown_formats_are_refused() {
        for text in ["hunter2", "", "$1$salt$hash", "$apr1$x$y", "{SHA}abc", "$pbkdf2-sha256$1$a$b"] {
            assert_eq!(StoredHash::parse(text).unwrap_err(), HashError::UnknownFormat, "{text:?}");
        }
    }

    #[test]
    fn damaged_hashes_of_known_formats_are_refused() {
        let damaged = [
            &ARGON2ID_AMQTT[..40],
            "$argon2id$v=19$m=65536,t=3,p=4",
            &SHA512_CRYPT_OPENSSL[..50],
            "$6$rounds=10$ZpsUbdsVWwxIQAxA$XsQhsiPJYxdga.1l6p1fy5Z0jpzuSdpimgSBvmtaPfQA6etEwRetFrxcSg/bMu5TVW777.uVxcA0R9BwXytiH0",
            &BCRYPT_2B[..59],
            "$2b$99$qJ1dWmViDt1VJp5ROlv5eeI9B61d.k43GPUCgp6K8BRL.6llZiGha",
            "$7$0$ez9cOKSBhmhTwjho$Kx5F",
            "$7$101$!!$Kx5F",
            "$7$101$ez9cOKSBhmhTwjho",
        ];
        for text in damaged {
            let error = StoredHash::parse(text).unwrap_err();
            assert!(matches!(error, HashError::Malformed { .. }), "{text:?}: {error}");
            assert!(!error.to_string().contains(&text[3..]), "the message must not quote the hash");
        }
    }

    #[test]
    fn debug_does_not_show_the_hash() {
        let hash = StoredHash::parse(BCRYPT_2B).unwrap();
        assert_eq!(format!("{hash:?}"), "StoredHash(bcrypt)");
    }
}
