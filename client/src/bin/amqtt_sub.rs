//! `amqtt_sub`: subscribes to topic filters and prints the messages received, with aMQTT
//! 0.12's flags and mosquitto_sub's `-v`.

mod common;

use std::io::Write;
use std::process::ExitCode;

use amqtt_client::{MqttClient, QoS, SubscribeReturnCode};
use clap::Parser;

use common::{ConnectionArgs, Signals};

/// Subscribe to MQTT topics and print the messages (aMQTT 0.12's amqtt_sub, in Rust).
///
/// Each message's payload is written to stdout as received (raw bytes), followed by a newline,
/// and flushed at once, so a pipe sees it immediately. Retained messages are printed too. It
/// runs until -n messages were printed, or SIGINT (Ctrl-C) / SIGTERM, then disconnects cleanly
/// and exits 0.
#[derive(Debug, Parser)]
#[command(name = "amqtt_sub", version, after_help = common::after_help(EXAMPLES))]
struct Cli {
    /// Topic filter to subscribe to (+ and # wildcards allowed). Repeat it for more filters.
    #[arg(short = 't', long = "topic", value_name = "FILTER", required = true)]
    topics: Vec<String>,

    /// Exit (status 0, after a clean disconnect) once COUNT messages were printed.
    #[arg(short = 'n', value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Highest QoS wanted for the subscriptions: 0, 1 or 2. Default: default_qos of the config
    /// file, else 0.
    #[arg(short = 'q', long = "qos", value_name = "QOS", value_parser = common::parse_qos)]
    qos: Option<QoS>,

    /// Print each message as `topic payload` (the topic, a space, the payload), as
    /// mosquitto_sub -v does.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,

    #[command(flatten)]
    connection: ConnectionArgs,
}

const EXAMPLES: &str = "  amqtt_sub -t 'sensors/#' -v
  amqtt_sub --url mqtt://user:secret@broker:1883 -t alerts -t 'logs/+' -q 1 -n 10
  amqtt_sub --url mqtts://broker:8883 --ca-file ca.pem -t 'sensors/#'
  amqtt_sub --url wss://broker/mqtt -t 'sensors/#' -v   # trusts the system's CA certificates
";

fn main() -> ExitCode {
    common::main(|cli: &Cli| cli.connection.debug, |cli| async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    for filter in &cli.topics {
        amqtt_protocol::validate_topic_filter(filter)
            .map_err(|error| anyhow::anyhow!("invalid topic filter {filter:?}: {error}"))?;
    }
    let config = cli.connection.client_config()?;
    let url = cli.connection.broker_url(&config);
    let qos = cli.qos.unwrap_or(config.default_qos);
    let client = MqttClient::new(Some(&cli.connection.client_id()), config);
    tracing::debug!(client_id = client.client_id(), %url, "connecting");

    tokio::select! {
        connected = client.connect(&url) => { connected?; }
        () = signals.recv() => return Ok(client.disconnect().await?),
    }
    let filters: Vec<(&str, QoS)> = cli.topics.iter().map(|filter| (filter.as_str(), qos)).collect();
    let granted = tokio::select! {
        granted = client.subscribe(&filters) => granted?,
        () = signals.recv() => return Ok(client.disconnect().await?),
    };
    let mut refused = 0;
    for ((filter, _), code) in filters.iter().zip(&granted) {
        match code {
            SubscribeReturnCode::Success(granted) => tracing::debug!(filter, %granted, "subscribed"),
            SubscribeReturnCode::Failure => {
                refused += 1;
                common::warn_user(&format!("the broker refused the subscription to {filter:?}"));
            }
        }
    }
    if refused == filters.len() {
        client.disconnect().await?;
        anyhow::bail!("the broker refused every subscription");
    }

    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let message = tokio::select! {
            message = client.deliver_message(None) => message?,
            () = signals.recv() => break,
        };
        let mut out = stdout.lock();
        let written = (|| {
            if cli.verbose {
                out.write_all(message.topic.as_bytes())?;
                out.write_all(b" ")?;
            }
            out.write_all(&message.payload)?;
            out.write_all(b"\n")?;
            out.flush()
        })();
        match written {
            Ok(()) => {}
            // The reader went away (`amqtt_sub ... | head -1`): a normal end.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(error) => {
                let _ = client.disconnect().await;
                return Err(anyhow::Error::new(error).context("cannot write to stdout"));
            }
        }
        printed += 1;
        if cli.count == Some(printed) {
            break;
        }
    }
    client.disconnect().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
