//! Embedding the broker in your own program: the Rust counterpart of aMQTT's
//! `Broker(config).start()`.
//!
//! ```text
//! cargo run -p amqtt-examples --example embedded_broker -- 127.0.0.1:1883
//! mosquitto_sub -h 127.0.0.1 -t '#' -v      # in another terminal
//! ```
//!
//! The broker runs on threads of its own, so the embedding program may be synchronous (as here)
//! or async on any runtime. Press Enter to stop it.

use amqtt_broker::{Broker, Config};

fn main() -> anyhow::Result<()> {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:1883".to_string());
    // The same YAML an `amqtt -c` config file holds; `Config::default()` is aMQTT's default
    // (0.0.0.0:1883, anonymous access).
    let yaml = format!(
        "listeners:\n  default:\n    type: tcp\n    bind: {bind}\nauth:\n  allow-anonymous: true\nmax-queued-messages: 500\n"
    );
    let (config, warnings) = Config::from_yaml_str(&yaml, None)?;
    for warning in warnings {
        eprintln!("config warning: {warning}");
    }

    let broker = Broker::new(config).start()?;
    for listener in broker.listeners() {
        println!("listener {} on {}", listener.name, listener.addr);
    }
    println!("press Enter to stop");
    std::io::stdin().read_line(&mut String::new())?;

    println!("{:?}", broker.stats());
    broker.stop();
    Ok(())
}
