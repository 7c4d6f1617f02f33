//! `MqttClient`, the API: a cheap, cloneable handle on one connection driver task.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amqtt_protocol::{QoS, SubscribeReturnCode};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::driver::{Command, Driver, Settings, Status};
use crate::session::{Reply, SessionState};
use crate::transport::Connector;
use crate::url::{parse_url, redact_password};
use crate::{ClientConfig, ClientError, Message};

/// Messages received and not yet taken by `deliver_message`. When it is full the driver stops
/// reading the socket (back-pressure toward the broker), so nothing is lost.
const DELIVERY_QUEUE: usize = 1000;
/// Commands waiting for the driver; callers beyond it wait their turn.
const COMMAND_QUEUE: usize = 256;
/// `connect("")` without `connection.uri` in the config: aMQTT's default.
const DEFAULT_URI: &str = "mqtt://127.0.0.1:1883";
/// How long `disconnect()` waits for the driver to take its request.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 client, the counterpart of aMQTT's `MQTTClient`.
///
/// Clones share one connection: any number of tasks may publish, subscribe and receive through
/// their own clone at the same time. The connection is run by a task of its own (started by
/// [`connect`](MqttClient::connect)), which keeps it alive with PINGREQ, reconnects when it is
/// lost (see [`ClientConfig::auto_reconnect`]) and restores the subscriptions and unfinished
/// publishes afterwards.
///
/// ```no_run
/// # async fn run() -> Result<(), amqtt_client::ClientError> {
/// use amqtt_client::{ClientConfig, MqttClient, QoS};
///
/// let client = MqttClient::new(None, ClientConfig::default());
/// client.connect("mqtt://localhost:1883").await?;
/// client.subscribe(&[("sensors/#", QoS::AtLeastOnce)]).await?;
/// client.publish("sensors/t1", "21.5", Some(QoS::AtLeastOnce), None).await?;
/// let message = client.deliver_message(None).await?;
/// println!("{}: {:?}", message.topic, message.payload);
/// client.disconnect().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MqttClient {
    inner: Arc<Inner>,
}

struct Inner {
    client_id: String,
    config: Arc<ClientConfig>,
    driver: Mutex<Option<DriverHandle>>,
    /// Serializes `connect` and `disconnect` between clones.
    lifecycle: tokio::sync::Mutex<()>,
    /// The session between two connections, for `cleansession: false`.
    saved: Mutex<SessionState>,
    /// Kept here rather than in the driver so that messages received on one connection can
    /// still be taken after it ends, and the next connection delivers into the same queue.
    incoming_tx: mpsc::Sender<Message>,
    incoming_rx: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    status: Arc<watch::Sender<Status>>,
}

struct DriverHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<SessionState>,
}

/// How `stop_driver` ends the connection.
enum StopKind {
    Disconnect,
    Abort,
}

impl fmt::Debug for MqttClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttClient")
            .field("client_id", &self.inner.client_id)
            .field("status", &*self.inner.status.borrow())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MqttClient {
    /// A client with the given id, or a generated one (`amqtt/` and 16 random characters, like
    /// aMQTT's) when `None`. Nothing happens on the network before [`connect`](Self::connect).
    pub fn new(client_id: Option<&str>, config: ClientConfig) -> MqttClient {
        let client_id = client_id.map_or_else(generate_client_id, str::to_string);
        let (incoming_tx, incoming_rx) = mpsc::channel(DELIVERY_QUEUE);
        let (status, _) = watch::channel(Status::Idle);
        MqttClient {
            inner: Arc::new(Inner {
                client_id,
                config: Arc::new(config),
                driver: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                saved: Mutex::new(SessionState::default()),
                incoming_tx,
                incoming_rx: tokio::sync::Mutex::new(incoming_rx),
                status: Arc::new(status),
            }),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Whether the client has a connection right now (false while it reconnects).
    pub fn is_connected(&self) -> bool {
        *self.inner.status.borrow() == Status::Connected
    }

    /// Connects to `url` (`[mqtt|ws][s]://[user][:password]@host[:port][/path]`; an empty
    /// string means `connection.uri` from the config, else `mqtt://127.0.0.1:1883`) and returns
    /// whether the broker still had a session for this client id.
    ///
    /// `mqtts://` (port 8883 by default) and `wss://` (443) use TLS as set by the config's
    /// `connection` (CA and client certificates), `check_hostname` and `verify_cert`; `ws://`
    /// (80) and `wss://` send MQTT in WebSocket binary frames, with subprotocol `mqtt`, the URL's
    /// path (`ws://host:8080/mqtt`) and `extra_headers` in the upgrade request. Certificate
    /// and key files are read here, once: a bad one fails at once with
    /// [`ClientError::TlsSetup`]. A certificate the client does not trust (or the broker does
    /// not) fails with [`ClientError::Tls`], a refused upgrade with
    /// [`ClientError::WebSocket`]; neither is retried.
    ///
    /// With `auto_reconnect` a failed attempt is retried `reconnect_retries` times (see
    /// [`ClientConfig`]); a refusal (CONNACK with an error code) is not. Credentials in the URL
    /// win over `username` / `password` in the config. Calling it while connected replaces
    /// the connection (the old one is closed with DISCONNECT).
    pub async fn connect(&self, url: &str) -> Result<bool, ClientError> {
        let config = &self.inner.config;
        let url = match url {
            "" => config.connection.uri.as_deref().unwrap_or(DEFAULT_URI),
            url => url,
        };
        let broker = parse_url(url)?;
        let connector = Connector::new(&broker, config)?;
        let (username, password) = if broker.username.is_some() || broker.password.is_some() {
            (broker.username.clone(), broker.password.clone())
        } else {
            (config.username.clone(), config.password.clone())
        };
        // MQTT has no password without a user name [MQTT-3.1.2-22]: send an empty one.
        let username = if password.is_some() { Some(username.unwrap_or_default()) } else { username };

        let ready = {
            let _lifecycle = self.inner.lifecycle.lock().await;
            self.stop_driver(StopKind::Disconnect).await;
            let state = {
                let mut saved = lock(&self.inner.saved);
                let state = std::mem::take(&mut *saved);
                if config.cleansession {
                    state.into_clean()
                } else {
                    state
                }
            };
            let settings = Arc::new(Settings {
                client_id: self.inner.client_id.clone(),
                config: config.clone(),
                // For logs and errors only: never the password.
                url: redact_password(url),
                connector,
                username,
                password,
            });
            let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
            let driver =
                Driver::new(settings, receiver, self.inner.incoming_tx.clone(), self.inner.status.clone(), state);
            let (ready_tx, ready) = oneshot::channel();
            // Set here, not by the task, so that a `deliver_message` racing with this call
            // waits instead of finding the previous connection's Closed.
            self.inner.status.send_replace(Status::Connecting);
            let span = tracing::info_span!("mqtt_client", client_id = %self.inner.client_id);
            let task = tokio::spawn(driver.run(ready_tx).instrument(span));
            *lock(&self.inner.driver) = Some(DriverHandle { commands, task });
            // The lifecycle lock is released before waiting, so that a `disconnect()` can cancel
            // a connection that retries forever.
            ready
        };
        ready.await.unwrap_or(Err(ClientError::Disconnected))
    }

    /// Publishes a message and returns it once its QoS flow is complete: written for QoS 0,
    /// PUBACK received for QoS 1, PUBCOMP received for QoS 2. `None` for `qos` or `retain`
    /// takes the value from `topics` in the config, else `default_qos` / `default_retain`.
    ///
    /// Many publishes may be in flight at once (from clones of the client); beyond a window of
    /// 64 unacknowledged QoS 1/2 messages, more wait their turn. While the client reconnects a
    /// publish waits for the new connection.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: Option<QoS>,
        retain: Option<bool>,
    ) -> Result<Message, ClientError> {
        amqtt_protocol::validate_topic_name(topic)
            .map_err(|error| ClientError::Protocol(format!("cannot publish to topic {topic:?}: {error}")))?;
        let config = &self.inner.config;
        let defaults = config.topics.get(topic);
        let message = Message {
            topic: topic.to_string(),
            payload: payload.into(),
            qos: qos.or(defaults.and_then(|t| t.qos)).unwrap_or(config.default_qos),
            retain: retain.or(defaults.and_then(|t| t.retain)).unwrap_or(config.default_retain),
            dup: false,
        };
        self.request(|reply| Command::Publish { message, reply }).await
    }

    /// Subscribes to topic filters, each with the highest QoS wanted, and returns the broker's
    /// answer per filter: the QoS granted, or a failure. Granted subscriptions are remembered
    /// and made again by the client after a reconnection that finds no session on the broker.
    pub async fn subscribe(&self, filters: &[(&str, QoS)]) -> Result<Vec<SubscribeReturnCode>, ClientError> {
        if filters.is_empty() {
            return Err(ClientError::Protocol("subscribe needs at least one topic filter".into()));
        }
        for (filter, _) in filters {
            amqtt_protocol::validate_topic_filter(filter)
                .map_err(|error| ClientError::Protocol(format!("cannot subscribe to {filter:?}: {error}")))?;
        }
        let filters = filters.iter().map(|(filter, qos)| (filter.to_string(), *qos)).collect();
        self.request(|reply| Command::Subscribe { filters, reply }).await
    }

    /// Unsubscribes from topic filters (written exactly as they were subscribed) and waits for
    /// the broker's UNSUBACK.
    pub async fn unsubscribe(&self, filters: &[&str]) -> Result<(), ClientError> {
        if filters.is_empty() {
            return Err(ClientError::Protocol("unsubscribe needs at least one topic filter".into()));
        }
        for filter in filters {
            amqtt_protocol::validate_topic_filter(filter)
                .map_err(|error| ClientError::Protocol(format!("cannot unsubscribe from {filter:?}: {error}")))?;
        }
        let filters = filters.iter().map(|filter| filter.to_string()).collect();
        self.request(|reply| Command::Unsubscribe { filters, reply }).await
    }

    /// The next message received, waiting at most `timeout` (for ever when `None`): a
    /// [`ClientError::Timeout`] then. Messages keep coming across reconnections. Once the
    /// connection is gone for good, the messages already received are still returned, then
    /// [`ClientError::Disconnected`] (lost) or [`ClientError::NotConnected`] (after
    /// `disconnect()`, or before `connect()`).
    pub async fn deliver_message(&self, timeout: Option<Duration>) -> Result<Message, ClientError> {
        let next = async {
            let mut incoming = self.inner.incoming_rx.lock().await;
            let mut status = self.inner.status.subscribe();
            tokio::select! {
                biased;
                message = incoming.recv() => message.ok_or(ClientError::NotConnected),
                _ = status.wait_for(|status| matches!(status, Status::Idle | Status::Closed { .. })) => {
                    // The driver stopped; take what it delivered before.
                    incoming.try_recv().map_err(|_| self.gone_error())
                }
            }
        };
        match timeout {
            Some(timeout) => tokio::time::timeout(timeout, next).await.map_err(|_| ClientError::Timeout)?,
            None => next.await,
        }
    }

    /// Sends DISCONNECT (after anything already queued for sending), closes the connection and
    /// stops reconnecting: the broker discards the will. Does nothing when not connected.
    /// Calls still waiting for an acknowledgement fail with [`ClientError::NotConnected`]; with
    /// `cleansession: false` their messages are sent again on the next `connect`.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.stop_driver(StopKind::Disconnect).await;
        Ok(())
    }

    /// Test only: closes the socket without DISCONNECT and stops, as if the process had died,
    /// so that the broker publishes the will.
    #[doc(hidden)]
    pub async fn abort_connection_for_test(&self) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.stop_driver(StopKind::Abort).await;
    }

    /// Test only: closes the socket without DISCONNECT as a network failure would; the client
    /// then reconnects as configured.
    #[doc(hidden)]
    pub async fn drop_connection_for_test(&self) {
        let commands = lock(&self.inner.driver).as_ref().map(|driver| driver.commands.clone());
        if let Some(commands) = commands {
            let _ = commands.send(Command::DropConnection).await;
        }
    }

    /// Stops the driver, if any, and keeps its session state for the next connection.
    async fn stop_driver(&self, kind: StopKind) {
        let Some(DriverHandle { commands, task }) = lock(&self.inner.driver).take() else { return };
        let (reply, done) = oneshot::channel();
        let command = match kind {
            StopKind::Disconnect => Command::Disconnect { reply },
            StopKind::Abort => Command::Abort { reply },
        };
        // The send fails when the driver already ended (connection lost for good): nothing to
        // stop then. It can only wait long if the driver is stuck on a broker that reads nothing
        // (its command queue is then not drained): the task is ended by force, its session lost.
        match tokio::time::timeout(STOP_TIMEOUT, commands.send(command)).await {
            Ok(Ok(())) => {
                let _ = done.await;
            }
            Ok(Err(_)) => {}
            Err(_) => {
                tracing::warn!(client_id = %self.inner.client_id, "the connection is stuck; closing it by force");
                task.abort();
            }
        }
        drop(commands);
        if let Ok(state) = task.await {
            *lock(&self.inner.saved) = state;
        } else {
            self.inner.status.send_replace(Status::Closed { lost: false });
        }
    }

    /// Sends a command to the driver and waits for its answer.
    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClientError> {
        let commands = lock(&self.inner.driver).as_ref().map(|driver| driver.commands.clone());
        let commands = commands.ok_or(ClientError::NotConnected)?;
        let (reply, answer) = oneshot::channel();
        commands.send(command(reply)).await.map_err(|_| self.gone_error())?;
        answer.await.unwrap_or_else(|_| Err(self.gone_error()))
    }

    /// The error for a call that found no driver to answer it.
    fn gone_error(&self) -> ClientError {
        match *self.inner.status.borrow() {
            Status::Closed { lost: true } => ClientError::Disconnected,
            _ => ClientError::NotConnected,
        }
    }
}

/// `amqtt/` followed by 16 random letters and digits: aMQTT's format, unique enough that two
/// clients never take over each other's session by accident.
fn generate_client_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is seeded from the operating system's randomness; no need for a crate.
    let random = || {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    let mut bits = u128::from(random()) << 64 | u128::from(random());
    let mut id = String::from("amqtt/");
    for _ in 0..16 {
        id.push(char::from(ALPHABET[(bits % ALPHABET.len() as u128) as usize]));
        bits /= ALPHABET.len() as u128;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_look_like_amqtt_ids_and_differ() {
        let a = MqttClient::new(None, ClientConfig::default());
        let b = MqttClient::new(None, ClientConfig::default());
        assert!(a.client_id().starts_with("amqtt/") && a.client_id().len() == 22, "{}", a.client_id());
        assert_ne!(a.client_id(), b.client_id());
        assert_eq!(MqttClient::new(Some("me"), ClientConfig::default()).client_id(), "me");
    }

    #[tokio::test]
    async fn calls_before_connect_say_so() {
        let client = MqttClient::new(None, ClientConfig::default());
        assert!(matches!(client.publish("a", "x", None, None).await, Err(ClientError::NotConnected)));
        assert!(matches!(client.deliver_message(None).await, Err(ClientError::NotConnected)));
        assert!(client.disconnect().await.is_ok());
    }

    #[tokio::test]
    async fn bad_tls_files_and_invalid_topics() {
        let config = ClientConfig {
            connection: crate::ConnectionConfig { cafile: Some("/nonexistent/ca.pem".into()), ..Default::default() },
            ..ClientConfig::default()
        };
        let client = MqttClient::new(None, config);
        for url in ["mqtts://h", "wss://h:1/mqtt"] {
            match client.connect(url).await {
                Err(error @ ClientError::TlsSetup { .. }) => {
                    let message = error.to_string();
                    assert!(
                        message.starts_with("CA file (connection.cafile, --ca-file) /nonexistent/ca.pem: cannot read"),
                        "{message}"
                    )
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        // Without TLS the CA file is not read.
        let client = MqttClient::new(None, ClientConfig { auto_reconnect: false, ..client.config().clone() });
        assert!(matches!(client.connect("ws://127.0.0.1:1").await, Err(ClientError::Unreachable { .. })));
        assert!(matches!(client.connect("nope").await, Err(ClientError::InvalidUrl { .. })));
        assert!(matches!(client.publish("a/+", "x", None, None).await, Err(ClientError::Protocol(_))));
        assert!(matches!(client.subscribe(&[]).await, Err(ClientError::Protocol(_))));
        assert!(matches!(client.subscribe(&[("a/#/b", QoS::AtMostOnce)]).await, Err(ClientError::Protocol(_))));
    }
}
