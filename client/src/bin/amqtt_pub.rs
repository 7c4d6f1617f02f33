//! `amqtt_pub`: publishes messages to an MQTT broker, with aMQTT 0.12's flags.
//!
//! The messages are handed to the client in input order and many are in flight at once (up to
//! [`WINDOW`]); the command exits 0 once every one completed its QoS flow, after a clean
//! DISCONNECT.

mod common;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::io::BufRead;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::Poll;

use amqtt_client::{ClientError, Message, MqttClient, QoS};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser};
use tokio::sync::mpsc;

use common::{ConnectionArgs, Signals};

/// Publishes in flight at most; the next one waits for the oldest to complete. Well under the
/// client's command queue (256), so that each publish reaches the client on its first poll,
/// which is what keeps them in input order.
const WINDOW: usize = 128;

const EXAMPLES: &str = "  amqtt_pub -t sensors/kitchen -m 21.5 -q 1
  amqtt_pub --url mqtt://user:secret@broker:1883 -t logs -l -q 1 < app.log
  amqtt_pub -t firmware/v2 -s -r < image.bin
  amqtt_pub -t status/pump -n -r          # clears the retained message of status/pump
  amqtt_pub --url mqtts://broker:8883 --ca-file ca.pem -t alerts -m on
  amqtt_pub --url mqtts://broker --ca-file ca.pem --cert-file me.pem --key-file me.key -t a -m 1
  amqtt_pub --url ws://broker:8080/mqtt --extra-headers '{\"Authorization\": \"Bearer abc\"}' -t a -m 1
";

/// Lines read ahead from stdin while earlier ones are being published.
const READ_AHEAD: usize = 64;

/// Publish MQTT messages (aMQTT 0.12's amqtt_pub, in Rust).
///
/// Exactly one of -m, -f, -s, -l, -n says what to publish. With QoS 1 or 2 many messages are
/// in flight at once, in order; the command exits 0 once the broker has acknowledged every one,
/// then disconnects cleanly. SIGINT (Ctrl-C) or SIGTERM stops it: it disconnects cleanly and
/// exits 0 if everything read so far was published, else 1.
#[derive(Debug, Parser)]
#[command(name = "amqtt_pub", version, after_help = common::after_help(EXAMPLES))]
struct Cli {
    /// Topic to publish to (a topic name: no + or # wildcards).
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    topic: String,

    #[command(flatten)]
    source: SourceArgs,

    /// QoS of the messages: 0 (at most once), 1 (at least once) or 2 (exactly once). Default:
    /// the config file's `topics` entry for the topic, else its default_qos, else 0.
    #[arg(short = 'q', long = "qos", value_name = "QOS", value_parser = common::parse_qos)]
    qos: Option<QoS>,

    /// Publish as retained messages: the broker keeps the last one and gives it to every later
    /// subscriber. Default: the config file's `topics` entry, else its default_retain, else off.
    #[arg(short = 'r', long = "retain")]
    retain: bool,

    #[command(flatten)]
    connection: ConnectionArgs,
}

/// What to publish: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct SourceArgs {
    /// Publish MESSAGE, one message.
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    message: Option<OsString>,

    /// Publish each line of FILE as a message, without its line terminator (\n or \r\n); an
    /// empty line is a zero-length message.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,

    /// Read stdin to its end and publish it as one message, bytes exactly as read.
    #[arg(short = 's', long = "stdin")]
    stdin: bool,

    /// Publish each line of stdin as a message as soon as it is read, without its line
    /// terminator (\n or \r\n); an empty line is a zero-length message. Ends at end of input.
    #[arg(short = 'l', long = "lines")]
    lines: bool,

    /// Publish one zero-length message.
    #[arg(short = 'n', long = "no-message")]
    no_message: bool,
}

fn main() -> ExitCode {
    common::main(|cli: &Cli| cli.connection.debug, run)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install()?;
    amqtt_protocol::validate_topic_name(&cli.topic)
        .map_err(|error| anyhow::anyhow!("invalid topic {:?}: {error}", cli.topic))?;
    let config = cli.connection.client_config()?;
    let url = cli.connection.broker_url(&config);
    // Before connecting: an unreadable file is reported at once.
    let mut source = Source::open(&cli.source)?;
    let client = MqttClient::new(Some(&cli.connection.client_id()), config);
    tracing::debug!(client_id = client.client_id(), %url, "connecting");

    tokio::select! {
        connected = client.connect(&url) => { connected?; }
        () = signals.recv() => {
            client.disconnect().await?;
            return Ok(interrupted(source.remaining()));
        }
    }

    let retain = cli.retain.then_some(true);
    let mut pipeline = Pipeline::default();
    let publish_all = async {
        while let Some(payload) = source.next().await {
            let payload = payload.context("cannot read stdin")?;
            tracing::debug!(topic = cli.topic, bytes = payload.len(), "publishing");
            pipeline.wait_until(WINDOW - 1).await?;
            pipeline.push(client.publish(&cli.topic, payload, cli.qos, retain)).await?;
        }
        pipeline.wait_until(0).await?;
        anyhow::Ok(())
    };
    let result = tokio::select! {
        result = publish_all => Some(result),
        () = signals.recv() => None,
    };
    match result {
        Some(Ok(())) => {
            client.disconnect().await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(error)) => {
            // A clean goodbye if the connection is still there (a lost one makes this a no-op).
            let _ = client.disconnect().await;
            Err(error)
        }
        None => {
            // Interrupted: read no more, but give what is already in flight a moment to be
            // confirmed (a second signal does not wait), so that what was sent is not
            // reported unconfirmed merely because its PUBACK was on the way.
            tokio::select! {
                _ = tokio::time::timeout(SIGNAL_GRACE, pipeline.wait_until(0)) => {}
                () = signals.recv() => {}
            }
            let unconfirmed = pipeline.unconfirmed().await + source.remaining();
            drop(pipeline);
            client.disconnect().await?;
            Ok(interrupted(unconfirmed))
        }
    }
}

/// How long an interrupted `amqtt_pub` waits for the confirmations of what it already sent.
const SIGNAL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The exit status after SIGINT / SIGTERM: success only if nothing taken from the input was
/// left unconfirmed.
fn interrupted(unconfirmed: usize) -> ExitCode {
    if unconfirmed == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("{}: interrupted: {unconfirmed} message(s) not confirmed by the broker", common::program());
    ExitCode::from(common::EXIT_FAILURE)
}

type Publish<'a> = Pin<Box<dyn Future<Output = Result<Message, ClientError>> + 'a>>;

/// Publishes in flight, oldest first.
#[derive(Default)]
struct Pipeline<'a> {
    in_flight: VecDeque<Publish<'a>>,
}

impl<'a> Pipeline<'a> {
    /// How many publishes have not completed successfully, those still in flight included
    /// (a completed one stays queued until it reaches the front: look at each).
    async fn unconfirmed(&mut self) -> usize {
        let in_flight = &mut self.in_flight;
        std::future::poll_fn(|cx| {
            in_flight.retain_mut(|publish| !matches!(publish.as_mut().poll(cx), Poll::Ready(Ok(_))));
            Poll::Ready(in_flight.len())
        })
        .await
    }

    /// Hands `publish` to the client now and keeps it until it completes. Its first poll, done
    /// here, queues the request with the client (there is room: see [`WINDOW`]), so requests
    /// reach the client in the order of the calls. `unconstrained`: tokio's cooperative budget
    /// must not turn that first poll into a no-op.
    async fn push(&mut self, publish: impl Future<Output = Result<Message, ClientError>> + 'a) -> anyhow::Result<()> {
        let mut publish: Publish<'a> = Box::pin(tokio::task::unconstrained(publish));
        let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(result) => {
                result.context("publish failed")?;
            }
            Poll::Pending => self.in_flight.push_back(publish),
        }
        Ok(())
    }

    /// Waits until at most `max` publishes are in flight; fails with the first that failed.
    /// Cancel-safe: a publish leaves the queue only once it completed.
    async fn wait_until(&mut self, max: usize) -> anyhow::Result<()> {
        while self.in_flight.len() > max {
            if let Some(oldest) = self.in_flight.front_mut() {
                oldest.as_mut().await.context("publish failed")?;
            }
            self.in_flight.pop_front();
        }
        Ok(())
    }
}

/// Where the messages come from.
enum Source {
    /// Known before connecting: -m, -n, -f.
    Fixed(std::vec::IntoIter<Bytes>),
    /// Read by a thread of its own as the command goes: -s, -l.
    Stdin(mpsc::Receiver<std::io::Result<Bytes>>),
}

impl Source {
    fn open(args: &SourceArgs) -> anyhow::Result<Source> {
        let fixed = |messages: Vec<Bytes>| Ok(Source::Fixed(messages.into_iter()));
        if let Some(message) = &args.message {
            fixed(vec![Bytes::from(message.clone().into_vec())])
        } else if let Some(path) = &args.file {
            let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            fixed(split_lines(Bytes::from(data)))
        } else if args.no_message {
            fixed(vec![Bytes::new()])
        } else {
            Ok(Source::Stdin(read_stdin(args.lines)))
        }
    }

    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        match self {
            Source::Fixed(messages) => messages.next().map(Ok),
            Source::Stdin(lines) => lines.recv().await,
        }
    }

    /// Messages known and not yet taken.
    fn remaining(&self) -> usize {
        match self {
            Source::Fixed(messages) => messages.len(),
            Source::Stdin(_) => 0,
        }
    }
}

/// The lines of `data` without their terminators (`\n` or `\r\n`); a last line without a
/// terminator counts, an empty input has no line.
fn split_lines(data: Bytes) -> Vec<Bytes> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < data.len() {
        match data[start..].iter().position(|&byte| byte == b'\n') {
            Some(length) => {
                lines.push(strip_cr(data.slice(start..start + length)));
                start += length + 1;
            }
            None => {
                lines.push(data.slice(start..));
                break;
            }
        }
    }
    lines
}

fn strip_cr(line: Bytes) -> Bytes {
    match line.last() {
        Some(b'\r') => line.slice(..line.len() - 1),
        _ => line,
    }
}

/// Reads stdin on a thread of its own (a blocking read must not hold up the connection): each
/// line without its terminator when `lines`, else everything up to the end as one message.
fn read_stdin(lines: bool) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (sender, receiver) = mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        if !lines {
            let mut all = Vec::new();
            let read = std::io::Read::read_to_end(&mut stdin, &mut all).map(|_| Bytes::from(all));
            let _ = sender.blocking_send(read);
            return;
        }
        loop {
            let mut line = Vec::new();
            let item = match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    Ok(Bytes::from(line))
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => Err(error),
            };
            let failed = item.is_err();
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_terminators() {
        let lines = split_lines(Bytes::from_static(b"a\r\nb\n\nc"));
        assert_eq!(lines, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(split_lines(Bytes::from_static(b"x\n")), [&b"x"[..]]);
        assert!(split_lines(Bytes::new()).is_empty());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
