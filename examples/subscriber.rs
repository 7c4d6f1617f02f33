//! Subscribing and receiving: the Rust counterpart of aMQTT's `samples/client_subscribe.py`.
//!
//! ```text
//! cargo run -p amqtt-examples --example embedded_broker            # a broker, in one terminal
//! cargo run -p amqtt-examples --example subscriber -- mqtt://127.0.0.1:1883
//! cargo run -p amqtt-examples --example publisher -- mqtt://127.0.0.1:1883   # in a third
//! ```
//!
//! It subscribes to `a/b` (where the publisher example publishes) and to the broker's `$SYS`
//! statistics, prints the first ten messages, then unsubscribes and disconnects. The client
//! reconnects by itself if the broker restarts, and subscribes again.

use std::time::Duration;

use amqtt_client::{ClientConfig, ClientError, MqttClient, QoS};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let url = std::env::args().nth(1).unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());

    let client = MqttClient::new(None, ClientConfig::default());
    client.connect(&url).await?;
    let filters =
        [("a/b", QoS::ExactlyOnce), ("$SYS/broker/uptime", QoS::AtLeastOnce), ("$SYS/broker/load/#", QoS::ExactlyOnce)];
    let granted = client.subscribe(&filters).await?;
    println!("subscribed as {}: {granted:?}", client.client_id());

    for i in 1..=10 {
        match client.deliver_message(Some(Duration::from_secs(60))).await {
            Ok(message) => {
                println!("{i}: {} => {}", message.topic, String::from_utf8_lossy(&message.payload))
            }
            Err(ClientError::Timeout) => {
                println!("nothing for a minute, giving up");
                break;
            }
            Err(error) => return Err(error),
        }
    }

    client.unsubscribe(&filters.map(|(filter, _)| filter)).await?;
    println!("unsubscribed");
    client.disconnect().await
}
