//! Starting and stopping a broker: the actor system, its threads and its listeners.
//!
//! A broker runs on threads of its own (an actix `System` with one worker arbiter per core for
//! the sessions and one for the router), so it can be embedded in any program, async or not:
//! `Broker::new(config).start()` returns once every listener is bound, and the returned handle
//! stops it.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle, System};
use amqtt_plugin_api::Event;
use tokio::net::{TcpListener, TcpSocket};
use tracing::{error, info};

use crate::config::{Config, ConfigError, ListenerConfig, ListenerKind};
use crate::listener::Listener;
use crate::plugins::{self, BrokerApi, PluginHost, PluginSetupError};
use crate::router::{Durable, Marks, Restore, RestoredSession};
use crate::router::{Router, RouterSettings};
use crate::session::Session;
use crate::session::{Limits, SessionSettings, SessionShared, TopicLimits};
use crate::shutdown::GracefulStop;
use crate::stats::{Stats, StatsSnapshot};
use crate::storage::{RedbStore, Snapshot, StorageHandle, StorageWriter, Store, StoreError};
use crate::transport::tls::TlsListener;
use crate::transport::websocket::WebSocketListener;
use crate::transport::TlsSetupError;

/// Pending connections the kernel may hold per listener while the broker accepts.
const LISTEN_BACKLOG: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugins(#[from] PluginSetupError),
    /// A TLS listener's certificate, key or CA files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("listener {name}: cannot bind {addr}: {source} (is another broker running on this port?)")]
    Bind { name: String, addr: SocketAddr, source: std::io::Error },
    /// The persistence file cannot be opened or read (the message says what to do).
    #[error("persistence: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot start broker threads: {0}")]
    Threads(std::io::Error),
    #[error("the broker thread ended before it was ready")]
    StartAborted,
}

/// A broker, configured but not yet running.
pub struct Broker {
    config: Config,
    workers: usize,
}

/// An address a listener is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
}

impl Broker {
    pub fn new(config: Config) -> Self {
        let workers = thread::available_parallelism().map_or(1, |n| n.get());
        Broker { config, workers }
    }

    /// Number of worker threads for sessions; defaults to the number of cores.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Binds every listener and starts serving. Fails without leaving anything running when
    /// the configuration asks for what this build cannot do or an address cannot be bound.
    pub fn start(self) -> Result<RunningBroker, BrokerError> {
        self.config.check_supported()?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("amqtt-broker".into())
            .spawn(move || run_system(self.config, self.workers, ready_tx))
            .map_err(BrokerError::Threads)?;
        match ready_rx.recv() {
            Ok(Ok(started)) => {
                for listener in &started.listeners {
                    info!(listener = %listener.name, addr = %listener.addr, "listening");
                }
                Ok(RunningBroker {
                    system: started.system,
                    thread: Some(thread),
                    listeners: started.listeners,
                    stats: started.stats,
                    plugins: started.plugins,
                    graceful_stop: Some(started.graceful_stop),
                })
            }
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(BrokerError::StartAborted)
            }
        }
    }
}

struct Started {
    system: System,
    listeners: Vec<BoundListener>,
    stats: Arc<Stats>,
    plugins: Arc<PluginHost>,
    graceful_stop: GracefulStop,
}

fn run_system(config: Config, workers: usize, ready: mpsc::Sender<Result<Started, BrokerError>>) {
    let runner = System::new();
    let mut arbiters = Vec::new();
    let mut storage = None;
    let result = runner.block_on(async { start_actors(&config, workers, &mut arbiters, &mut storage) });
    let ok = result.is_ok();
    if ready.send(result).is_err() || !ok {
        System::current().stop();
    }
    if let Err(error) = runner.run() {
        error!(%error, "broker system ended with an error");
    }
    for arbiter in arbiters {
        arbiter.stop();
        let _ = arbiter.join();
    }
    // Last: every actor that could still save something has stopped.
    if let Some(storage) = storage {
        match storage.shutdown() {
            Ok(()) => info!("persistence: everything saved"),
            Err(error) => error!(%error, "persistence: the final save failed"),
        }
    }
}

fn start_actors(
    config: &Config,
    workers: usize,
    arbiters: &mut Vec<Arbiter>,
    storage: &mut Option<StorageHandle>,
) -> Result<Started, BrokerError> {
    // Plugins first: a misconfigured plugin stops start-up before any port is bound.
    let (plugins, dispatcher) = plugins::setup::build_host(config)?;
    // TLS files too: a bad certificate or key stops start-up before any port is bound.
    let tls = config.listeners.iter().map(tls_listener).collect::<Result<Vec<_>, _>>()?;
    let sockets = config
        .listeners
        .iter()
        .map(|listener| bind(listener).map(|socket| (listener, socket)))
        .collect::<Result<Vec<_>, _>>()?;

    // What an earlier run saved is back before anyone can connect.
    let (durable, snapshot) = match &config.persistence {
        None => (None, Snapshot::default()),
        Some(persistence) => {
            let store = RedbStore::open(&persistence.path)?;
            let snapshot = store.load()?;
            info!(
                path = %persistence.path.display(),
                retained = snapshot.retained.len(),
                sessions = snapshot.sessions.len(),
                messages = snapshot.sessions.iter().map(|session| session.messages.len()).sum::<usize>(),
                incoming = snapshot.sessions.iter().map(|session| session.incoming.len()).sum::<usize>(),
                "persistence: state restored"
            );
            let handle =
                StorageWriter::start(Box::new(store), persistence.sync.into()).map_err(BrokerError::Threads)?;
            *storage = Some(handle.clone());
            (Some(Durable::new(handle)), snapshot)
        }
    };

    let stats = Arc::new(Stats::default());
    let router_arbiter = Arbiter::try_new().map_err(BrokerError::Threads)?;
    let router_settings = RouterSettings {
        max_subscriptions_per_client: config.max_subscriptions_per_client,
        max_queued_messages: config.max_queued_messages,
    };
    let router_stats = stats.clone();
    let router_plugins = plugins.clone();
    let retained = snapshot.retained;
    // Right as soon as `start` returns, although the router restores them on its own thread.
    stats.set_retained(retained.len());
    let router = Router::start_in_arbiter(&router_arbiter.handle(), move |_| {
        let mut router = Router::new(router_settings, router_stats, router_plugins, durable);
        router.restore_retained(retained);
        router
    });
    arbiters.push(router_arbiter);
    if let Some(dispatcher) = dispatcher {
        // Event plugins get a thread of their own: a slow one never delays a client.
        let events_arbiter = Arbiter::try_new().map_err(BrokerError::Threads)?;
        events_arbiter.spawn(dispatcher.run());
        arbiters.push(events_arbiter);
    }

    let mut handles: Vec<ArbiterHandle> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let arbiter = Arbiter::try_new().map_err(BrokerError::Threads)?;
        handles.push(arbiter.handle());
        arbiters.push(arbiter);
    }
    let workers: Arc<[ArbiterHandle]> = handles.into();

    let sessions = Arc::new(SessionShared {
        settings: SessionSettings {
            connect_timeout: config.connect_timeout,
            keep_alive_grace: config.timeout_disconnect_delay,
            max_packet_size: config.max_packet_size,
            max_queued_messages: config.max_queued_messages,
            topic_limits: TopicLimits::new(config.max_topic_length, config.max_topic_levels),
        },
        limits: Limits::new(config.max_inflight_messages, config.max_queued_messages),
        admission_step: Marks::new(config.max_queued_messages).step,
        storage: storage.clone(),
        session_expiry: config.session_expiry_interval,
        router: router.clone(),
        stats: stats.clone(),
        plugins: plugins.clone(),
    });

    // Persistent sessions of the earlier run, parked across the workers and known to the
    // router before the first client can connect (its mailbox takes this first).
    let restored = snapshot
        .sessions
        .into_iter()
        .enumerate()
        .map(|(index, stored)| {
            let generation = index as u64 + 1;
            let client_id = stored.client_id.clone();
            let subscriptions = stored.record.subscriptions.clone();
            let last_seq = stored.messages.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
            let session = Session::restore(&workers[index % workers.len()], stored, generation, sessions.clone());
            RestoredSession { client_id, subscriptions, last_seq, generation, session }
        })
        .collect::<Vec<_>>();
    if !restored.is_empty() {
        router.do_send(Restore(restored));
    }

    let mut listeners = Vec::with_capacity(sockets.len());
    let mut acceptors = Vec::with_capacity(sockets.len());
    for ((listener, socket), tls) in sockets.into_iter().zip(tls) {
        let addr = socket.local_addr().map_err(|source| BrokerError::Bind {
            name: listener.name.clone(),
            addr: listener.bind,
            source,
        })?;
        listeners.push(BoundListener { name: listener.name.clone(), addr });
        let acceptor =
            Listener::new(listener.name.clone(), socket, workers.clone(), sessions.clone(), listener.max_connections)
                .with_tls(tls)
                .with_websocket(
                    (listener.kind == ListenerKind::Ws).then(|| Arc::new(WebSocketListener::new(&listener.name))),
                )
                .start();
        acceptors.push(acceptor);
    }
    let graceful_stop = GracefulStop { acceptors, router: router.clone(), stats: stats.clone() };
    plugins.emit(Event::BrokerStarted { broker: Arc::new(BrokerApi { router, stats: stats.clone() }) });
    Ok(Started { system: System::current(), listeners, stats, plugins, graceful_stop })
}

/// The TLS side of a tcp or ws listener with `ssl: on`, its files loaded; None without TLS.
fn tls_listener(listener: &ListenerConfig) -> Result<Option<Arc<TlsListener>>, TlsSetupError> {
    if !listener.ssl {
        return Ok(None);
    }
    TlsListener::new(listener).map(|tls| Some(Arc::new(tls)))
}

fn bind(listener: &ListenerConfig) -> Result<TcpListener, BrokerError> {
    let addr = listener.bind;
    let error = |source| BrokerError::Bind { name: listener.name.clone(), addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(error)?;
    // Lets a restarted broker bind while connections of the previous run are in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(LISTEN_BACKLOG).map_err(error)
}

/// A running broker. Dropping it stops the broker too.
pub struct RunningBroker {
    system: System,
    thread: Option<JoinHandle<()>>,
    listeners: Vec<BoundListener>,
    stats: Arc<Stats>,
    plugins: Arc<PluginHost>,
    /// Taken by the first stop.
    graceful_stop: Option<GracefulStop>,
}

impl RunningBroker {
    /// The bound address of every listener (with the real port when the config said port 0).
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.name == name).map(|l| l.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops gracefully and waits for the broker's threads to end: closes the listeners, lets
    /// every connection take what was already routed to it (for at most a few seconds: see
    /// `shutdown`), closes them, and saves what persistence has pending.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Blocks until the broker stops (from another handle's `stop` or a failure).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            info!("broker stopping");
            self.plugins.emit(Event::BrokerStopping);
            let spawned = match self.graceful_stop.take() {
                // Not Send (actor futures): built on the system's own thread.
                Some(stop) => self.system.arbiter().spawn_fn(move || {
                    actix_rt::spawn(stop.run());
                }),
                None => false,
            };
            if !spawned {
                // The system has ended already (or is ending): nothing left to drain.
                self.system.stop();
            }
            let _ = thread.join();
            info!("broker stopped");
        }
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
