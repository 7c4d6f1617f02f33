//! Publishing with each QoS: the Rust counterpart of aMQTT's `samples/client_publish.py`.
//!
//! ```text
//! cargo run -p amqtt-examples --example publisher -- mqtt://127.0.0.1:1883
//! ```
//!
//! First three publishes run concurrently from clones of one client and are awaited together
//! (aMQTT's `test_coro`), then three more run one after the other (`test_coro2`). Each
//! `publish` completes when its QoS flow does: at once for QoS 0, on PUBACK for QoS 1, on
//! PUBCOMP for QoS 2. The client's will is published by the broker if it dies without
//! disconnecting.

use amqtt_client::{ClientConfig, ClientError, MqttClient, QoS, WillConfig};
use bytes::Bytes;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let url = std::env::args().nth(1).unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let config = ClientConfig {
        will: Some(WillConfig {
            topic: "/will/client".into(),
            message: Bytes::from_static(b"Dead or alive"),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        ..ClientConfig::default()
    };

    // Concurrent: the three messages are in flight at once. (Clones of a client share its
    // connection, so spawned tasks can each publish through their own clone just as well.)
    let client = MqttClient::new(None, config.clone());
    client.connect(&url).await?;
    let (a, b, c) = tokio::join!(
        client.publish("a/b", "TEST MESSAGE WITH QOS_0", None, None),
        client.publish("a/b", "TEST MESSAGE WITH QOS_1", Some(QoS::AtLeastOnce), None),
        client.publish("a/b", "TEST MESSAGE WITH QOS_2", Some(QoS::ExactlyOnce), None),
    );
    for message in [a?, b?, c?] {
        println!("published with QoS {}: {}", message.qos, String::from_utf8_lossy(&message.payload));
    }
    client.disconnect().await?;

    // Sequential: each publish waits for the previous one's acknowledgement.
    let client = MqttClient::new(None, config);
    client.connect(&url).await?;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let message = client.publish("a/b", format!("TEST MESSAGE WITH QOS_{qos}"), Some(qos), None).await?;
        println!("published with QoS {}: {}", message.qos, String::from_utf8_lossy(&message.payload));
    }
    println!("messages published");
    client.disconnect().await
}
