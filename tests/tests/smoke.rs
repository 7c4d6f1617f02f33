//! The first thing that must work: publish and receive through the broker.

use amqtt_tests::*;

#[tokio::test]
async fn publish_reaches_subscriber() {
    let broker = start_broker();
    let (mut sub, present) = TestClient::connect(addr(&broker), "sub", true).await;
    assert!(!present);
    assert_eq!(sub.subscribe(&[("a/#", QoS::ExactlyOnce)]).await, vec![SubscribeReturnCode::Success(QoS::ExactlyOnce)]);
    let (mut publisher, _) = TestClient::connect(addr(&broker), "pub", true).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher.publish("a/b", b"hello", qos, false).await;
        let got = sub.recv_publish().await;
        assert_eq!((got.topic.as_ref() as &str, got.payload.as_ref(), got.qos), ("a/b", b"hello".as_ref(), qos));
        sub.ack(&got).await;
    }
    publisher.disconnect().await;
    sub.disconnect().await;
    broker.stop();
}
