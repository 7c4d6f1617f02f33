//! Clients kept connected through a test of something else, to show that it leaves them alone.

use std::net::SocketAddr;

use amqtt_broker::StatsSnapshot;

use crate::{addr, round_trip, start_broker_with, subscriber, QoS, RunningBroker, TestClient};

/// A broker with a subscriber to `ok/#` and a publisher. After each case a test calls
/// [`Bystanders::still_served`]: a QoS 1 message still goes from one to the other, and nothing
/// unexpected reached the subscriber before it.
pub struct Bystanders {
    pub broker: RunningBroker,
    pub sub: TestClient,
    pub publisher: TestClient,
    round: u32,
}

impl Bystanders {
    /// A broker configured with `yaml`, and both bystanders, shown to work.
    pub async fn start(yaml: &str) -> Bystanders {
        let broker = start_broker_with(yaml);
        let sub = subscriber(addr(&broker), "bystander-sub", &[("ok/#", QoS::AtLeastOnce)]).await;
        let (publisher, _) = TestClient::connect(addr(&broker), "bystander-pub", true).await;
        let mut bystanders = Bystanders { broker, sub, publisher, round: 0 };
        bystanders.still_served().await;
        bystanders
    }

    pub fn addr(&self) -> SocketAddr {
        addr(&self.broker)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.broker.stats()
    }

    /// A QoS 1 round trip between the bystanders, its message the next one the subscriber gets.
    pub async fn still_served(&mut self) {
        self.round += 1;
        let payload = format!("round {}", self.round);
        round_trip(&mut self.publisher, &mut self.sub, "ok/t", payload.as_bytes()).await;
    }

    pub fn stop(self) {
        self.broker.stop();
    }
}
