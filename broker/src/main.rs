//! `amqtt`: the broker command, with aMQTT's flags.

use std::path::PathBuf;
use std::process::ExitCode;

use amqtt_broker::{Broker, Config};
use anyhow::Context;
use clap::Parser;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// amqtt-rs MQTT 3.1.1 broker.
///
/// Without -c it listens on 0.0.0.0:1883 and allows anonymous clients, as aMQTT does.
/// RUST_LOG (e.g. RUST_LOG=amqtt_broker=debug) overrides the log level.
#[derive(Debug, Parser)]
#[command(name = "amqtt", version, about, long_about)]
struct Args {
    /// Broker configuration file (aMQTT's YAML schema).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log at debug level.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.debug);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = error_chain(&error);
            tracing::error!("{message}");
            eprintln!("amqtt: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // No colour escapes when stderr is a file or a pipe (service logs, tests parsing them).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already includes (our error types print their source themselves).
fn error_chain(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => {
            let (config, warnings) = Config::load(path)?;
            for warning in warnings {
                warn!("{}: {warning}", path.display());
            }
            config
        }
        None => Config::default(),
    };
    // Handlers first: a signal sent as soon as the "listening" line shows must stop the broker
    // cleanly, not kill it with the default disposition.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let broker = Broker::new(config).start()?;
    info!(version = env!("CARGO_PKG_VERSION"), "amqtt broker started");
    let signal = signals.wait();
    // Graceful: the listeners close, connections take what was routed to them, persistence
    // saves; bounded, so a service manager's stop timeout is met whatever the clients do.
    info!(signal, "signal received: shutting down");
    broker.stop();
    Ok(())
}

/// SIGINT and SIGTERM handlers, installed (from then on those signals are caught) until
/// `wait` returns.
struct Signals {
    runtime: tokio::runtime::Runtime,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let _guard = runtime.enter();
        let terminate = signal(SignalKind::terminate())?;
        let interrupt = signal(SignalKind::interrupt())?;
        Ok(Signals { runtime, terminate, interrupt })
    }

    /// Blocks until SIGINT or SIGTERM; returns its name.
    fn wait(self) -> &'static str {
        let Signals { runtime, mut terminate, mut interrupt } = self;
        runtime.block_on(async {
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            }
        })
    }
}
