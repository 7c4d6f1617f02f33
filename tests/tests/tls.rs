//! TLS listeners (`ssl: on`): MQTT over TLS at every QoS, mutual TLS (`cafile`,
//! `require-certificate`), `use-identity-as-username`, handshakes that fail or never start
//! (counted in `tls_handshake_failures`, nobody else notices), `max-connections` on a TLS
//! listener, start-up errors for bad certificate files, and Mosquitto's clients over TLS.
//!
//! Every certificate is made at test time with rcgen: a CA, a server certificate for
//! 127.0.0.1 and localhost, a client certificate `CN=device-7,O=Acme` from that CA, one from an
//! unrelated CA, and an expired one. Nothing that expires is checked in.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqtt_tests::process::{peer_available, probe, ChildLines};
use amqtt_tests::*;
use bytes::BytesMut;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const Q1: QoS = QoS::AtLeastOnce;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate and its key, as PEM files.
struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// The certificates of one test, written to a temporary folder that lives as long as this.
struct Pki {
    dir: tempfile::TempDir,
    /// The CA the broker trusts for client certificates, which also signed its own.
    ca: PathBuf,
    server: Pem,
    /// `CN=device-7,O=Acme`, from `ca`.
    device: Pem,
    /// `CN=intruder`, from a CA the broker does not know.
    intruder: Pem,
    /// `CN=device-7`, from `ca`, but valid only in 2000.
    expired: Pem,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.distinguished_name.push(DnType::OrganizationName, "Acme");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertifiedIssuer::self_signed(ca_params("amqtt test CA"), KeyPair::generate().unwrap()).unwrap();
        let other_ca = CertifiedIssuer::self_signed(ca_params("unrelated CA"), KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let write = |name: &str, params: CertificateParams, issuer: &CertifiedIssuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, issuer).unwrap();
            let pem = Pem { cert: dir.path().join(format!("{name}.pem")), key: dir.path().join(format!("{name}.key")) };
            std::fs::write(&pem.cert, cert.pem()).unwrap();
            std::fs::write(&pem.key, key.serialize_pem()).unwrap();
            pem
        };
        let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server.distinguished_name = DistinguishedName::new();
        server.distinguished_name.push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = write("server", server, &ca);
        let device = write("device-7", client_params("device-7"), &ca);
        let intruder = write("intruder", client_params("intruder"), &other_ca);
        let mut expired = client_params("device-7");
        expired.not_before = date_time_ymd(2000, 1, 1);
        expired.not_after = date_time_ymd(2001, 1, 1);
        let expired = write("expired", expired, &ca);
        Pki { dir, ca: ca_file, server, device, intruder, expired }
    }

    /// A file in the test's folder, for files a test writes itself.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A YAML listener `default` on 127.0.0.1 with a free port and `ssl: on` with the server's
    /// certificate and key, followed by `extra` listener keys (each line indented by 4).
    fn listener(&self, extra: &str) -> String {
        format!(
            "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n    ssl: on\n    certfile: {}\n    \
             keyfile: {}\n{extra}",
            self.server.cert.display(),
            self.server.key.display()
        )
    }

    /// [`Pki::listener`] with the CA as `cafile`: client certificates are verified.
    fn mtls_listener(&self, extra: &str) -> String {
        self.listener(&format!("    cafile: {}\n{extra}", self.ca.display()))
    }

    /// A client configuration that trusts the test CA and presents `cert`, if any.
    fn client(&self, cert: Option<&Pem>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match cert {
            Some(pem) => {
                let chain = CertificateDer::pem_file_iter(&pem.cert).unwrap().map(Result::unwrap).collect();
                builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&pem.key).unwrap()).unwrap()
            }
            None => builder.with_no_client_auth(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------------------------

/// A TLS connection to the broker at `addr`, verifying its certificate for "localhost".
async fn tls_stream(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    match tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp)).await {
        Ok(result) => result,
        Err(_) => panic!("TLS handshake not finished within {WAIT:?}"),
    }
}

/// A test client over TLS whose CONNECT `connect` was accepted.
async fn tls_client_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>, connect: Connect) -> TestClient {
    let stream = tls_stream(addr, config).await.expect("TLS handshake must succeed");
    let mut client = TestClient::over(stream);
    client.send(connect).await;
    match client.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.code, ConnectReturnCode::Accepted, "CONNACK over TLS"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

/// A clean-session test client `client_id` over TLS, accepted.
async fn tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>, client_id: &str) -> TestClient {
    tls_client_with(addr, config, connect_packet(client_id, true)).await
}

/// Asserts that the broker refuses a TLS client with `config`: its handshake fails, or (TLS
/// 1.3, where the client is done before the server has checked the client's certificate) the
/// connection closes instead of answering the CONNECT.
async fn assert_tls_refused(addr: SocketAddr, config: Arc<rustls::ClientConfig>) {
    let Ok(mut stream) = tls_stream(addr, config).await else { return };
    let mut connect = BytesMut::new();
    Packet::Connect(connect_packet("refused", true)).write(&mut connect).unwrap();
    // The write itself may already fail: the broker's alert and close can be there first.
    let _ = stream.write_all(&connect).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the broker answered a client it should have refused: {:?}", &buf[..n]),
        Err(_) => panic!("connection neither refused nor answered within {WAIT:?}"),
    }
}

/// Waits (bounded) until the broker has counted `n` failed TLS handshakes, and asserts it
/// counts no more: the broker counts a failure as it drops the connection, which the client
/// may notice first.
async fn expect_handshake_failures(broker: &RunningBroker, n: u64) {
    let deadline = Instant::now() + WAIT;
    while broker.stats().tls_handshake_failures < n {
        assert!(Instant::now() < deadline, "{n} TLS handshake failures not counted within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(broker.stats().tls_handshake_failures, n, "TLS handshake failures");
}

// ---------------------------------------------------------------------------------------------
// MQTT over TLS
// ---------------------------------------------------------------------------------------------

/// [MQTT-4.2.0-1] MQTT over TLS: CONNECT, SUBSCRIBE and PUBLISH round trips at QoS 0, 1 and 2
/// between two TLS clients, on a listener with a server certificate only.
#[tokio::test]
async fn publish_and_subscribe_over_tls_at_qos_0_1_2() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.listener(""));
    let a = addr(&broker);
    let mut sub = tls_client(a, pki.client(None), "sub").await;
    let mut publisher = tls_client(a, pki.client(None), "pub").await;
    for qos in QOS_ALL {
        let filter = format!("tls/{}/#", qos as u8);
        assert_eq!(sub.subscribe(&[(&filter, qos)]).await, [SubscribeReturnCode::Success(qos)]);
        let name = format!("tls/{}/data", qos as u8);
        publisher.publish(&name, b"over tls", qos, false).await;
        let got = sub.recv_publish().await;
        assert_eq!((topic(&got), text(&got), got.qos), (name.as_str(), "over tls", qos));
        sub.ack(&got).await;
    }
    assert_eq!(broker.stats().clients_connected, 2);
    assert_eq!(broker.stats().tls_handshake_failures, 0);
    publisher.disconnect().await;
    sub.disconnect().await;
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------------------------

/// With `cafile` and `require-certificate: true`, a client certificate from that CA is
/// accepted, and the session works.
#[tokio::test]
async fn client_certificate_from_the_listeners_ca_is_accepted() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.mtls_listener("    require-certificate: true\n"));
    let a = addr(&broker);
    let mut device = tls_client(a, pki.client(Some(&pki.device)), "device").await;
    let mut other = tls_client(a, pki.client(Some(&pki.device)), "other").await;
    assert_eq!(other.subscribe(&[("mtls/#", Q1)]).await, [SubscribeReturnCode::Success(Q1)]);
    round_trip(&mut device, &mut other, "mtls/a", b"verified").await;
    assert_eq!(broker.stats().tls_handshake_failures, 0);
}

/// A client certificate from a CA the listener does not trust fails the handshake, counted;
/// a client with the right certificate connects afterwards as before.
#[tokio::test]
async fn client_certificate_from_another_ca_fails_the_handshake() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.mtls_listener(""));
    let a = addr(&broker);
    assert_tls_refused(a, pki.client(Some(&pki.intruder))).await;
    expect_handshake_failures(&broker, 1).await;
    tls_client(a, pki.client(Some(&pki.device)), "device").await.disconnect().await;
    assert_eq!(broker.stats().clients_connected, 0);
}

/// An expired client certificate (from the right CA) fails the handshake, counted.
#[tokio::test]
async fn expired_client_certificate_fails_the_handshake() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.mtls_listener(""));
    assert_tls_refused(addr(&broker), pki.client(Some(&pki.expired))).await;
    expect_handshake_failures(&broker, 1).await;
    assert_eq!(broker.stats().clients_connected, 0);
}

/// `require-certificate: true`: a client without a certificate fails the handshake.
#[tokio::test]
async fn no_client_certificate_fails_when_required() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.mtls_listener("    require-certificate: true\n"));
    assert_tls_refused(addr(&broker), pki.client(None)).await;
    expect_handshake_failures(&broker, 1).await;
}

/// With a CA but without `require-certificate`, a certificate is optional: a client without
/// one is accepted, next to one with a certificate.
#[tokio::test]
async fn no_client_certificate_is_accepted_when_not_required() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.mtls_listener(""));
    let a = addr(&broker);
    let mut without = tls_client(a, pki.client(None), "without").await;
    let mut with = tls_client(a, pki.client(Some(&pki.device)), "with").await;
    assert_eq!(with.subscribe(&[("optional/#", Q1)]).await, [SubscribeReturnCode::Success(Q1)]);
    round_trip(&mut without, &mut with, "optional/a", b"no certificate needed").await;
    assert_eq!(broker.stats().tls_handshake_failures, 0);
}

/// `use-identity-as-username: true`: the certificate's CN is the user name (topic_acl's `%u`
/// grants `devices/device-7/#` only), replacing the CONNECT's, and the certificate stands in
/// for a password where anonymous clients are refused; a client without a certificate on the
/// same listener is still refused.
#[tokio::test]
async fn use_identity_as_username_takes_the_cn_as_user_name() {
    let pki = Pki::new();
    let yaml = pki.mtls_listener("    use-identity-as-username: true\n")
        + "auth:\n  plugins: [auth_anonymous]\n  allow-anonymous: false\n\
           topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  acl:\n    device-7: ['devices/%u/#']\n    \
           mallory: ['#']\n";
    let broker = start_broker_with(&yaml);
    let a = addr(&broker);

    // No user name and no password in the CONNECT: the certificate vouches.
    let mut device = tls_client(a, pki.client(Some(&pki.device)), "cert-only").await;
    assert_eq!(
        device.subscribe(&[("devices/device-7/#", Q1), ("devices/other/#", Q1)]).await,
        [SubscribeReturnCode::Success(Q1), SubscribeReturnCode::Failure],
        "%u is the certificate's CN"
    );

    // A user name in the CONNECT is replaced by the CN: `mallory` may subscribe to `#`, the
    // CN may not.
    let connect = Connect { username: Some(ByteString::from("mallory")), ..connect_packet("claims-mallory", true) };
    let mut claimer = tls_client_with(a, pki.client(Some(&pki.device)), connect).await;
    assert_eq!(claimer.subscribe(&[("#", Q1)]).await, [SubscribeReturnCode::Failure], "user name is the CN");

    // Without a certificate the client is anonymous, and anonymous clients are refused.
    let stream = tls_stream(a, pki.client(None)).await.unwrap();
    let mut anonymous = TestClient::over(stream);
    anonymous.send(connect_packet("anonymous", true)).await;
    match anonymous.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    anonymous.expect_closed().await;
}

// ---------------------------------------------------------------------------------------------
// Failed and silent handshakes, limits
// ---------------------------------------------------------------------------------------------

/// A plaintext MQTT client on a TLS port is dropped without an answer and counted; a TLS
/// client connected before keeps working.
#[tokio::test]
async fn plaintext_client_on_a_tls_port_fails_and_others_go_on() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.listener(""));
    let a = addr(&broker);
    let mut sub = tls_client(a, pki.client(None), "sub").await;
    assert_eq!(sub.subscribe(&[("plain/#", Q1)]).await, [SubscribeReturnCode::Success(Q1)]);

    let mut plaintext = TestClient::connect_raw(a).await;
    plaintext.send(connect_packet("plaintext", true)).await;
    plaintext.expect_closed().await;
    expect_handshake_failures(&broker, 1).await;

    let mut publisher = tls_client(a, pki.client(None), "pub").await;
    round_trip(&mut publisher, &mut sub, "plain/a", b"still here").await;
    assert_eq!(broker.stats().clients_connected, 2);
}

/// A TCP client that connects to a TLS port and sends nothing is dropped once `connect-timeout`
/// has passed, not before, and counted.
#[tokio::test]
async fn silent_tcp_client_is_dropped_after_the_connect_timeout() {
    let pki = Pki::new();
    let broker = start_broker_with(&(pki.listener("") + "connect-timeout: 0.5\n"));
    let started = Instant::now();
    let mut silent = TestClient::connect_raw(addr(&broker)).await;
    silent.expect_closed().await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "dropped after {waited:?}, before the connect timeout");
    expect_handshake_failures(&broker, 1).await;
}

/// `max-connections: 2` on a TLS listener: a third connection is closed at accept (counted as
/// refused, not as a failed handshake) while two TLS clients are connected; once one of them
/// has gone a new TLS client gets in.
#[tokio::test]
async fn max_connections_on_a_tls_listener() {
    let pki = Pki::new();
    let broker = start_broker_with(&pki.listener("    max-connections: 2\n"));
    let a = addr(&broker);
    let mut one = tls_client(a, pki.client(None), "one").await;
    let mut two = tls_client(a, pki.client(None), "two").await;
    assert_eq!(two.subscribe(&[("max/#", Q1)]).await, [SubscribeReturnCode::Success(Q1)]);

    assert!(tls_stream(a, pki.client(None)).await.is_err(), "third TLS handshake must fail: closed at accept");
    assert_eq!(broker.stats().connections_refused, 1);
    round_trip(&mut one, &mut two, "max/a", b"still working").await;

    one.disconnect().await;
    // The slot is given back asynchronously: retry for a bounded time.
    let deadline = Instant::now() + WAIT;
    // A connection closed at accept cannot finish a handshake: one that does was accepted.
    let stream = loop {
        if let Ok(stream) = tls_stream(a, pki.client(None)).await {
            break stream;
        }
        assert!(Instant::now() < deadline, "no TLS connection accepted within {WAIT:?} after one of two closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut three = TestClient::over(stream);
    three.send(connect_packet("three", true)).await;
    assert!(matches!(three.recv().await, Packet::ConnAck(ConnAck { code: ConnectReturnCode::Accepted, .. })));
    round_trip(&mut three, &mut two, "max/b", b"freed slot").await;
    assert_eq!(broker.stats().tls_handshake_failures, 0);
}

// ---------------------------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------------------------

/// Starting a broker with `yaml` fails; returns the error message.
fn start_error(yaml: &str) -> String {
    let (config, _) = Config::from_yaml_str(yaml, None).expect("config must parse");
    match Broker::new(config).workers(1).start() {
        Ok(_) => panic!("the broker started with bad TLS files"),
        Err(error) => error.to_string(),
    }
}

fn assert_names(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} does not name {part:?}");
    }
}

/// A missing key file, a certificate file with no certificate, and a key that is not the
/// certificate's each fail start-up with a message naming the key, the file and the problem;
/// so does `require-certificate` without a CA.
#[test]
fn bad_tls_files_fail_start_up_naming_the_file() {
    let pki = Pki::new();
    let certfile = pki.server.cert.display().to_string();

    let missing = pki.path("missing.key");
    let yaml = format!(
        "listeners:\n  secure:\n    bind: 127.0.0.1:0\n    ssl: on\n    certfile: {certfile}\n    keyfile: {}\n",
        missing.display()
    );
    let message = start_error(&yaml);
    assert_names(&message, &["listeners.secure.keyfile", &missing.display().to_string(), "cannot read it"]);

    let message = start_error("listeners:\n  secure:\n    bind: 127.0.0.1:0\n    ssl: on\n");
    assert_names(&message, &["listeners.secure.certfile", "needs its certificate"]);

    // A key where the certificate should be: PEM, but no certificate in it.
    let yaml = pki.listener("").replace(&certfile, &pki.server.key.display().to_string());
    let message = start_error(&yaml);
    assert_names(
        &message,
        &[
            "listeners.default.certfile",
            &pki.server.key.display().to_string(),
            "no certificate found in it (is it PEM?)",
        ],
    );

    let not_pem = pki.path("server.der");
    std::fs::write(&not_pem, [0x30, 0x82, 0x01, 0x00]).unwrap();
    let message = start_error(&pki.listener("").replace(&certfile, &not_pem.display().to_string()));
    assert_names(&message, &["listeners.default.certfile", &not_pem.display().to_string(), "no certificate found"]);

    let yaml = pki.listener("").replace(&pki.server.key.display().to_string(), &pki.device.key.display().to_string());
    let message = start_error(&yaml);
    assert_names(
        &message,
        &[
            "listeners.default.keyfile",
            &pki.device.key.display().to_string(),
            "private key does not match the certificate",
            &certfile,
        ],
    );

    let message = start_error(&pki.listener("    require-certificate: true\n"));
    assert_names(&message, &["listeners.default.require-certificate", "cafile, capath or cadata"]);

    let bad_ca = pki.path("bad-ca.pem");
    std::fs::write(&bad_ca, "not a certificate\n").unwrap();
    let message = start_error(&pki.listener(&format!("    cafile: {}\n", bad_ca.display())));
    assert_names(&message, &["listeners.default.cafile", &bad_ca.display().to_string(), "no certificate found"]);
}

/// `capath` (a folder of PEM files) and `cadata` (PEM text in the config) are CA sources like
/// `cafile`: a client certificate from the CA they hold is accepted where one is required.
#[tokio::test]
async fn capath_and_cadata_hold_the_client_cas() {
    let pki = Pki::new();
    let folder = pki.path("cas");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(&pki.ca, folder.join("ca.pem")).unwrap();
    std::fs::write(folder.join("README"), "not a certificate\n").unwrap();
    let capath = pki.listener(&format!("    capath: {}\n    require-certificate: true\n", folder.display()));
    let broker = start_broker_with(&capath);
    tls_client(addr(&broker), pki.client(Some(&pki.device)), "capath").await.disconnect().await;
    assert_tls_refused(addr(&broker), pki.client(Some(&pki.intruder))).await;
    broker.stop();

    let ca = std::fs::read_to_string(&pki.ca).unwrap();
    let indented: String = ca.lines().map(|line| format!("      {line}\n")).collect();
    let cadata = pki.listener(&format!("    cadata: |\n{indented}    require-certificate: true\n"));
    let broker = start_broker_with(&cadata);
    tls_client(addr(&broker), pki.client(Some(&pki.device)), "cadata").await.disconnect().await;
    assert_tls_refused(addr(&broker), pki.client(None)).await;
}

// ---------------------------------------------------------------------------------------------
// Mosquitto's clients over TLS
// ---------------------------------------------------------------------------------------------

/// Whether the Mosquitto clients can run (see [`peer_available`]: skipped unless `CI` is set).
fn mosquitto_available() -> bool {
    let missing = ["mosquitto_sub", "mosquitto_pub"].into_iter().find(|tool| probe(tool, &["--help"]).is_none());
    peer_available(missing.map(|tool| format!("{tool} not installed (apt-get install mosquitto-clients)")))
}

/// `program` against the broker at `addr` over TLS, trusting the test CA, with `args`.
fn mosquitto(program: &str, addr: SocketAddr, pki: &Pki, args: &[&str]) -> ChildLines {
    let mut command = Command::new(program);
    command.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()]).arg("--cafile").arg(&pki.ca).args(args);
    ChildLines::spawn(&mut command, format!("{program} --cafile {} {}", pki.ca.display(), args.join(" ")))
}

/// mosquitto_sub and mosquitto_pub over TLS with `--cafile` at QoS 1, and with `--cert` and
/// `--key` on a listener that requires a client certificate; without a certificate there,
/// mosquitto_pub fails.
#[tokio::test]
async fn mosquitto_clients_over_tls_and_mutual_tls() {
    if !mosquitto_available() {
        return;
    }
    let pki = Pki::new();
    let tls = start_broker_with(&pki.listener(""));
    check_mosquitto_round_trip(&tls, &pki, None).await;

    let mtls = start_broker_with(&pki.mtls_listener("    require-certificate: true\n"));
    check_mosquitto_round_trip(&mtls, &pki, Some(&pki.device)).await;
    let refused = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr(&mtls).port().to_string(), "-t", "mtls/x", "-m", "no cert", "-q", "1"])
        .arg("--cafile")
        .arg(&pki.ca)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, refused).await.expect("mosquitto_pub still running").unwrap();
    assert!(!output.status.success(), "mosquitto_pub without a certificate must fail where one is required");
    expect_handshake_failures(&mtls, 1).await;
}

/// A retained "ready" message from a TLS test client, then `mosquitto_sub` (printing it once
/// subscribed), then `mosquitto_pub`, whose message mosquitto_sub prints.
async fn check_mosquitto_round_trip(broker: &RunningBroker, pki: &Pki, cert: Option<&Pem>) {
    let a = addr(broker);
    let mut ready = tls_client(a, pki.client(cert), "ready").await;
    ready.publish("tls/ready", b"ready", Q1, true).await;
    ready.disconnect().await;

    let cert_flags: Vec<String> = match cert {
        Some(pem) => {
            vec!["--cert".into(), pem.cert.display().to_string(), "--key".into(), pem.key.display().to_string()]
        }
        None => Vec::new(),
    };
    let flags: Vec<&str> = cert_flags.iter().map(String::as_str).collect();
    let mut sub_args = vec!["-W", "30", "-t", "tls/#", "-q", "1", "-C", "2", "-v"];
    sub_args.extend_from_slice(&flags);
    let mut sub = mosquitto("mosquitto_sub", a, pki, &sub_args);
    assert_eq!(sub.line().await, "tls/ready ready");
    let mut pub_args = vec!["-t", "tls/data", "-m", "over tls", "-q", "1"];
    pub_args.extend_from_slice(&flags);
    mosquitto("mosquitto_pub", a, pki, &pub_args).success().await;
    assert_eq!(sub.line().await, "tls/data over tls");
    sub.success().await;
}
