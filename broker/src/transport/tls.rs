//! TLS on a listener (`ssl: on`), with mosquitto's client-certificate options.
//!
//! [`server_config`] turns a listener's `certfile`, `keyfile`, `cafile`, `capath`, `cadata` and
//! `require-certificate` into a rustls server configuration once, at start-up, so that a bad
//! file stops the broker with the key, the file and the problem instead of failing each client.
//! The `ring` provider is passed explicitly: rustls' default builder picks a process-wide
//! provider and panics when the tree holds two.
//!
//! A tcp listener with TLS ([`TlsListener`]) accepts as usual and hands the raw socket to the
//! worker that will own the session; the worker does the handshake ([`TlsListener::handshake`]),
//! bounded by `connect-timeout`, so the listener never waits on a slow or silent client. A
//! handshake that fails (a plaintext client, an unknown CA, an expired certificate, no
//! certificate where one is required) is logged with the peer and the reason, counted, and the
//! connection dropped; nobody else notices.
//!
//! With a CA configured, a client certificate is requested and verified when presented; the
//! verified certificate's subject is what auth plugins see as `cert_subject`, and with
//! `use-identity-as-username` its CN becomes the client's user name ([`identity`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, InconsistentKeys, RootCertStore, ServerConfig, ServerConnection};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};
use x509_cert::der::Decode;

use crate::config::ListenerConfig;
use crate::session::TransportIdentity;
use crate::stats::Stats;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a TLS listener cannot start. Each names the config key, and the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{key}: {problem}")]
    Setting { key: String, problem: String },
    #[error("{key}: {}: {problem}", file.display())]
    File { key: String, file: PathBuf, problem: String },
}

/// The rustls configuration of a listener with `ssl: on`: its certificate and key, and with a
/// CA (`cafile`, `capath`, `cadata`) the verification of client certificates, optional unless
/// `require-certificate` is set.
pub(crate) fn server_config(listener: &ListenerConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let key = |name: &str| format!("listeners.{}.{name}", listener.name);
    let certfile = listener.certfile.as_deref().ok_or_else(|| TlsSetupError::Setting {
        key: key("certfile"),
        problem: "`ssl` is on, so the listener needs its certificate: set certfile to a PEM file \
                  holding the server certificate (and its chain)"
            .to_string(),
    })?;
    let keyfile = listener.keyfile.as_deref().ok_or_else(|| TlsSetupError::Setting {
        key: key("keyfile"),
        problem: "`ssl` is on, so the listener needs the private key of its certificate: set keyfile \
                  to a PEM file holding it"
            .to_string(),
    })?;
    let chain = certificates_in_file(certfile).map_err(|problem| TlsSetupError::File {
        key: key("certfile"),
        file: certfile.to_path_buf(),
        problem,
    })?;
    let private_key = PrivateKeyDer::from_pem_file(keyfile).map_err(|error| TlsSetupError::File {
        key: key("keyfile"),
        file: keyfile.to_path_buf(),
        problem: match error {
            pem::Error::NoItemsFound => "no private key found in it (is it a PEM key file?)".to_string(),
            error => pem_problem(error),
        },
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsSetupError::Setting { key: key("ssl"), problem: error.to_string() })?;
    let builder = match client_cas(listener)? {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if listener.require_certificate { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|error| TlsSetupError::Setting {
                key: key("cafile"),
                problem: format!("cannot verify client certificates with these CAs: {error}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None if listener.require_certificate => {
            return Err(TlsSetupError::Setting {
                key: key("require-certificate"),
                problem: "client certificates can only be required with a CA to verify them: set cafile, \
                          capath or cadata"
                    .to_string(),
            })
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, private_key).map_err(|error| TlsSetupError::File {
        key: key("keyfile"),
        file: keyfile.to_path_buf(),
        problem: match error {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                format!("private key does not match the certificate in {}", certfile.display())
            }
            error => format!("cannot use this key with the certificate in {}: {error}", certfile.display()),
        },
    })?;
    Ok(Arc::new(config))
}

/// The CAs that client certificates are verified against, from `cafile`, `capath` and
/// `cadata` together; None when none is set.
fn client_cas(listener: &ListenerConfig) -> Result<Option<RootCertStore>, TlsSetupError> {
    if listener.cafile.is_none() && listener.capath.is_none() && listener.cadata.is_none() {
        return Ok(None);
    }
    let key = |name: &str| format!("listeners.{}.{name}", listener.name);
    let mut roots = RootCertStore::empty();
    let mut add = |certificates: Vec<CertificateDer<'static>>, key: String, file: Option<&Path>| {
        for certificate in certificates {
            roots.add(certificate).map_err(|error| {
                let problem = format!("not a usable CA certificate: {error}");
                match file {
                    Some(file) => TlsSetupError::File { key: key.clone(), file: file.to_path_buf(), problem },
                    None => TlsSetupError::Setting { key: key.clone(), problem },
                }
            })?;
        }
        Ok(())
    };
    if let Some(cafile) = &listener.cafile {
        let certificates = certificates_in_file(cafile).map_err(|problem| TlsSetupError::File {
            key: key("cafile"),
            file: cafile.clone(),
            problem,
        })?;
        add(certificates, key("cafile"), Some(cafile))?;
    }
    if let Some(capath) = &listener.capath {
        let folder_error = |problem: String| TlsSetupError::File { key: key("capath"), file: capath.clone(), problem };
        let entries =
            std::fs::read_dir(capath).map_err(|error| folder_error(format!("cannot read the folder: {error}")))?;
        let mut found = 0;
        for entry in entries {
            let path = entry.map_err(|error| folder_error(format!("cannot read the folder: {error}")))?.path();
            if !path.is_file() {
                continue;
            }
            // Every PEM certificate in the folder counts; other files (keys, notes) are skipped.
            match certificates_in_file(&path) {
                Ok(certificates) => {
                    found += certificates.len();
                    add(certificates, key("capath"), Some(&path))?;
                }
                Err(problem) => debug!(file = %path.display(), problem, "capath: file skipped"),
            }
        }
        if found == 0 {
            return Err(folder_error("no PEM certificate found in this folder".to_string()));
        }
    }
    if let Some(cadata) = &listener.cadata {
        let certificates = CertificateDer::pem_slice_iter(cadata.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsSetupError::Setting { key: key("cadata"), problem: pem_problem(error) })?;
        if certificates.is_empty() {
            return Err(TlsSetupError::Setting {
                key: key("cadata"),
                problem: "no certificate found in it (it must hold PEM text: -----BEGIN CERTIFICATE----- ...)"
                    .to_string(),
            });
        }
        add(certificates, key("cadata"), None)?;
    }
    Ok(Some(roots))
}

/// Every PEM certificate in `file`, at least one; else what is wrong, for the user.
fn certificates_in_file(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(file)
        .map_err(pem_problem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_problem)?;
    if certificates.is_empty() {
        return Err("no certificate found in it (is it PEM?)".to_string());
    }
    Ok(certificates)
}

fn pem_problem(error: pem::Error) -> String {
    match error {
        pem::Error::Io(error) => format!("cannot read it: {error}"),
        error => format!("not valid PEM: {error}"),
    }
}

/// What a verified client certificate tells about the client: its subject (RFC 4514, as in
/// `CN=device-7,O=Acme`) and, with `use_identity_as_username`, its CN as the user name. Empty
/// when the client presented no certificate.
pub(crate) fn identity(connection: &ServerConnection, use_identity_as_username: bool) -> TransportIdentity {
    // rustls keeps the peer's certificates only once they are verified.
    let Some(end_entity) = connection.peer_certificates().and_then(|chain| chain.first()) else {
        return TransportIdentity::default();
    };
    let certificate = match x509_cert::Certificate::from_der(end_entity.as_ref()) {
        Ok(certificate) => certificate,
        Err(error) => {
            // webpki accepted it, so this is a corner of DER that the parser here does not read.
            warn!(%error, "cannot read the subject of a verified client certificate");
            return TransportIdentity::default();
        }
    };
    let subject = certificate.tbs_certificate().subject();
    let username = if use_identity_as_username {
        match subject.common_name() {
            Ok(Some(cn)) => Some(cn.value().into_owned()),
            Ok(None) | Err(_) => {
                info!(subject = %subject, "client certificate has no readable CN: no user name taken from it");
                None
            }
        }
    } else {
        None
    };
    TransportIdentity { cert_subject: Some(subject.to_string()), username }
}

/// The TLS side of a tcp listener with `ssl: on`.
pub(crate) struct TlsListener {
    name: String,
    acceptor: TlsAcceptor,
    use_identity_as_username: bool,
}

impl TlsListener {
    /// Loads the listener's certificate, key and CAs; fails as [`server_config`] does.
    pub(crate) fn new(listener: &ListenerConfig) -> Result<TlsListener, TlsSetupError> {
        Ok(TlsListener {
            name: listener.name.clone(),
            acceptor: TlsAcceptor::from(server_config(listener)?),
            use_identity_as_username: listener.use_identity_as_username,
        })
    }

    /// Runs the server side of the handshake on `tcp`, within `timeout`. Returns the
    /// established stream and what the client's certificate said (None without one); on failure
    /// logs why, counts it in `stats` and returns None (the socket is dropped, which closes it).
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
        stats: &Stats,
    ) -> Option<(TlsStream<TcpStream>, Option<TransportIdentity>)> {
        let mut first_byte = None;
        // The socket comes back with a failure, so that the failure is counted before the
        // connection closes.
        let attempt = async {
            // Looking at the first byte tells a plaintext client or a port probe apart from a TLS
            // client that failed, for the log; it costs one syscall per connection.
            let mut byte = [0u8; 1];
            match tcp.peek(&mut byte).await {
                Ok(0) => return Err((Failure::Silent, tcp)),
                Ok(_) => first_byte = Some(byte[0]),
                Err(error) => return Err((Failure::Handshake(error), tcp)),
            }
            if byte[0] != TLS_HANDSHAKE_RECORD {
                return Err((Failure::NotTls(byte[0]), tcp));
            }
            self.acceptor.accept(tcp).into_fallible().await.map_err(|(error, tcp)| (Failure::Handshake(error), tcp))
        };
        let (failure, tcp) = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => {
                let identity = identity(stream.get_ref().1, self.use_identity_as_username);
                let identity = (identity != TransportIdentity::default()).then_some(identity);
                return Some((stream, identity));
            }
            Ok(Err((failure, tcp))) => (failure, Some(tcp)),
            Err(_) if first_byte.is_none() => (Failure::Silent, None),
            Err(_) => (Failure::TimedOut(timeout), None),
        };
        stats.tls_handshake_failed();
        let listener = &self.name;
        match failure {
            // A port scanner or health check that connects and goes: not worth more than debug.
            Failure::Silent => debug!(listener, %peer, "TLS handshake: the client sent nothing; dropped"),
            failure => info!(listener, %peer, reason = %failure, "TLS handshake failed; connection dropped"),
        }
        drop(tcp);
        None
    }
}

/// Why a handshake did not complete, worded for the log.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the client sent nothing")]
    Silent,
    #[error("not TLS: a plaintext client on a TLS port? (first byte {byte:#04x}{what})", byte = .0, what = if *.0 == 0x10 { ", an MQTT CONNECT" } else { "" })]
    NotTls(u8),
    #[error("the handshake did not finish within connect-timeout ({0:?})")]
    TimedOut(Duration),
    #[error("{}", describe(.0))]
    Handshake(io::Error),
}

/// A handshake error in the words of the person reading the log.
fn describe(error: &io::Error) -> String {
    let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof => "the client closed the connection during the handshake".to_string(),
            _ => error.to_string(),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("client certificate expired ({tls})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("client certificate not valid yet ({tls})")
            }
            CertificateError::UnknownIssuer => {
                "client certificate not issued by a CA of cafile/capath/cadata (unknown CA)".to_string()
            }
            _ => format!("client certificate rejected: {tls}"),
        },
        rustls::Error::NoCertificatesPresented => {
            "the client presented no certificate, and require-certificate is on".to_string()
        }
        rustls::Error::AlertReceived(alert) => {
            format!(
                "the client aborted the handshake with alert {alert:?} (does it trust this listener's certificate?)"
            )
        }
        _ => tls.to_string(),
    }
}
