//! TLS for `mqtts://` and `wss://`: rustls with the `ring` provider, configured as aMQTT's
//! client configures Python's `ssl` module.
//!
//! - Trust: `cafile`, `capath` and `cadata` together, or the system's CA certificates when
//!   none is given (Python's `create_default_context` does the same).
//! - `certfile` + `keyfile`: the client certificate, for brokers that require one.
//! - `check_hostname: false`: the certificate must still chain to a trusted CA, for any host.
//! - `verify_cert: false`: any certificate is accepted; the handshake signatures are still
//!   checked (the broker holds the key of the certificate it shows), the certificate is not.
//!
//! Handshake failures are turned into messages that say what to change ([`explain`]).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::{ClientConfig, ClientError};

/// What a TLS connection to one host needs, loaded once per `connect()`.
pub(crate) struct TlsSetup {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    verifies: bool,
}

impl TlsSetup {
    pub(crate) fn new(host: &str, config: &ClientConfig, endpoint: &str) -> Result<TlsSetup, ClientError> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|error| ClientError::Tls {
            url: endpoint.to_string(),
            reason: format!("{host:?} cannot be checked against a certificate ({error})"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| setup_error("TLS", error))?;
        let builder = if !config.verify_cert {
            let algorithms = provider.signature_verification_algorithms;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { algorithms }))
        } else {
            let roots = Arc::new(trusted_roots(config)?);
            if config.check_hostname {
                builder.with_root_certificates(roots)
            } else {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|error| setup_error("CA certificates", error))?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName { webpki }))
            }
        };
        let connection = &config.connection;
        let tls = match (&connection.certfile, &connection.keyfile) {
            (Some(certfile), Some(keyfile)) => {
                let chain =
                    certificates_in_file(certfile, "client certificate file (connection.certfile, --cert-file)")?;
                let key = private_key(keyfile)?;
                builder.with_client_auth_cert(chain, key).map_err(|error| ClientError::TlsSetup {
                    source_name: format!("{} and {}", certfile.display(), keyfile.display()),
                    reason: format!("the key does not go with the certificate: {error}"),
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ClientError::TlsSetup {
                    source_name: "connection.certfile / connection.keyfile".into(),
                    reason: "give both the client certificate and its key (--cert-file and --key-file), or neither"
                        .into(),
                })
            }
        };
        Ok(TlsSetup { connector: TlsConnector::from(Arc::new(tls)), server_name, verifies: config.verify_cert })
    }

    /// Whether the broker's certificate is verified (`verify_cert`).
    pub(crate) fn verifies(&self) -> bool {
        self.verifies
    }

    pub(crate) async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await.map_err(|error| match error.kind() {
            // What a plain MQTT listener does with a ClientHello: it drops the connection.
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => io::Error::new(
                error.kind(),
                format!(
                    "the broker closed the connection during the TLS handshake ({error}): is this port a TLS \
                     listener? (mqtt:// and ws:// connect without TLS)"
                ),
            ),
            _ => error,
        })
    }
}

fn setup_error(what: &str, error: impl fmt::Display) -> ClientError {
    ClientError::TlsSetup { source_name: what.into(), reason: error.to_string() }
}

/// The CA certificates that may sign the broker's certificate.
fn trusted_roots(config: &ClientConfig) -> Result<RootCertStore, ClientError> {
    let connection = &config.connection;
    let mut roots = RootCertStore::empty();
    let mut add = |certificates: Vec<CertificateDer<'static>>, source: &str| {
        for certificate in certificates {
            roots.add(certificate).map_err(|error| ClientError::TlsSetup {
                source_name: source.to_string(),
                reason: format!("not a usable CA certificate: {error}"),
            })?;
        }
        Ok::<_, ClientError>(())
    };
    if let Some(cafile) = &connection.cafile {
        add(certificates_in_file(cafile, "CA file (connection.cafile, --ca-file)")?, &cafile.display().to_string())?;
    }
    if let Some(capath) = &connection.capath {
        for (file, certificates) in certificates_in_dir(capath)? {
            add(certificates, &file)?;
        }
    }
    if let Some(cadata) = &connection.cadata {
        let source = "connection.cadata (--ca-data)";
        let certificates = CertificateDer::pem_slice_iter(cadata.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ClientError::TlsSetup { source_name: source.into(), reason: pem_problem(error) })?;
        if certificates.is_empty() {
            return Err(ClientError::TlsSetup {
                source_name: source.into(),
                reason: "no PEM certificate in it (-----BEGIN CERTIFICATE----- ...)".into(),
            });
        }
        add(certificates, source)?;
    }
    if connection.cafile.is_some() || connection.capath.is_some() || connection.cadata.is_some() {
        return Ok(roots);
    }
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        debug!(%error, "skipping part of the system's CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(system.certs);
    debug!(added, ignored, "trusting the system's CA certificates");
    if roots.is_empty() {
        return Err(ClientError::TlsSetup {
            source_name: "system CA certificates".into(),
            reason: "none found (install the ca-certificates package, or give the broker's CA with --ca-file / \
                     connection.cafile)"
                .into(),
        });
    }
    Ok(roots)
}

/// The certificates of a PEM file; none is an error.
fn certificates_in_file(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let error = |reason: String| ClientError::TlsSetup { source_name: format!("{what} {}", path.display()), reason };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let certificates =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| error(pem_problem(e)))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it (-----BEGIN CERTIFICATE----- ...)".into()));
    }
    Ok(certificates)
}

/// The certificates of every PEM file of a directory (OpenSSL's hashed links included), by
/// file; files without certificates are skipped, a directory without any is an error.
fn certificates_in_dir(dir: &Path) -> Result<Vec<(String, Vec<CertificateDer<'static>>)>, ClientError> {
    let error = |reason: String| ClientError::TlsSetup {
        source_name: format!("CA directory (connection.capath, --ca-path) {}", dir.display()),
        reason,
    };
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| error(format!("cannot read: {e}")))?;
    let mut paths: Vec<_> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
    paths.sort();
    for path in paths {
        // Follows links (c_rehash's `<hash>.0`); unreadable or non-PEM files are not CA files.
        let Ok(pem) = std::fs::read(&path) else { continue };
        let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
        if certificates.is_empty() {
            debug!(file = %path.display(), "no certificate in this file of capath, skipped");
        } else {
            found.push((path.display().to_string(), certificates));
        }
    }
    if found.is_empty() {
        return Err(error("no PEM certificate in any file of it".into()));
    }
    Ok(found)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    let error = |reason: String| ClientError::TlsSetup {
        source_name: format!("client key file (connection.keyfile, --key-file) {}", path.display()),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => error(
            "no PEM private key in it (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY; \
             an encrypted key must be decrypted first)"
                .into(),
        ),
        other => error(pem_problem(other)),
    })
}

fn pem_problem(error: rustls::pki_types::pem::Error) -> String {
    format!("not valid PEM: {error}")
}

/// What went wrong, in words, with what to do, when `error` is a TLS failure another attempt
/// would meet again; `None` for anything else (a reset, a timeout...), which is retried.
pub(crate) fn explain(error: &io::Error, host: &str) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<Error>()?;
    let reason = match tls {
        Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => format!(
                "the broker's certificate is not signed by a trusted CA ({certificate}): give the CA that signed it \
                 with --ca-file (connection.cafile)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the broker's certificate is not valid for {host:?} ({certificate}): connect with a host name the \
                 certificate holds, or turn off the name check (check_hostname: false, --insecure)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the broker's certificate has expired ({certificate}): the broker needs a new certificate")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the broker's certificate is not valid yet ({certificate}): check this machine's clock and the \
                 broker's"
            ),
            other => format!("the broker's certificate was rejected: {other}"),
        },
        Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => "the broker requires a client certificate: give one with \
                                                      --cert-file and --key-file (connection.certfile / keyfile)"
                .to_string(),
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
            | AlertDescription::HandshakeFailure => format!(
                "the broker refused the handshake ({alert:?}): if it requires a client certificate, give one \
                 signed by a CA it trusts with --cert-file and --key-file (connection.certfile / keyfile)"
            ),
            other => format!("the broker ended the handshake with the alert {other:?}"),
        },
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            format!(
                "the broker did not answer in TLS ({tls}): is this port a TLS listener? (mqtt:// and ws:// connect \
                 without TLS)"
            )
        }
        other => format!("{other}"),
    };
    Some(reason)
}

/// `check_hostname: false`: the full check of the chain, less the name.
#[derive(Debug)]
struct AnyHostName {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The name is checked last, once the chain, validity and usage passed.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            result => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `verify_cert: false`: any certificate. The handshake signatures are still verified against
/// the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
