//! The `topic_acl` plugin in a running broker: refused subscriptions, publishes and deliveries,
//! over real sockets, configured through `topic-check:` and through aMQTT 0.12's `plugins:`.

use amqtt_tests::*;
// Links the plugin into this test even before the broker names it among its built-ins.

/// Every client is let in (auth), and topic-check decides what each may do. `carol` and `dave`
/// share one list through a YAML anchor: `%u` makes it mean "your own tree" for each.
const ACL: &str = "
auth:
  allow-anonymous: true
topic-check:
  enabled: true
  plugins: [topic_acl]
  acl:
    feeder: ['#']
    admin: ['$SYS/#']
    alice: ['sensors/#']
    bob: ['sensors/#']
    strict: ['sensors/+']
    carol: &own ['users/%u/#']
    dave: *own
    anonymous: ['public/#']
  publish-acl:
    feeder: ['#']
    alice: ['sensors/+/temp']
    carol: *own
    dave: *own
    anonymous: ['public/in', 'devices/%c/#']
  receive-acl:
    feeder: ['#']
    alice: ['sensors/#']
    bob: ['sensors/+/temp']
    carol: *own
    dave: *own
    anonymous: ['public/#']
";

const Q1: QoS = QoS::AtLeastOnce;
const GRANTED: SubscribeReturnCode = SubscribeReturnCode::Success(Q1);
/// 0x80 in SUBACK [MQTT-3.9.3-2].
const REFUSED: SubscribeReturnCode = SubscribeReturnCode::Failure;

/// A clean-session client `client_id` that connects with `username` (None: anonymous).
async fn connect(broker: &RunningBroker, client_id: &str, username: Option<&str>) -> TestClient {
    let connect = Connect { username: username.map(ByteString::from), ..connect_packet(client_id, true) };
    TestClient::connect_accepted(addr(broker), connect).await.0
}

/// `feeder`, allowed everything, subscribed to every topic (but not to `$` topics [MQTT-4.7.2-1]).
async fn feeder(broker: &RunningBroker, client_id: &str) -> TestClient {
    let mut feeder = connect(broker, client_id, Some("feeder")).await;
    assert_eq!(feeder.subscribe(&[("#", Q1)]).await, [GRANTED]);
    feeder
}

#[tokio::test]
async fn refused_filter_gets_0x80_while_the_allowed_one_is_granted() {
    let broker = start_broker_with(ACL);
    let mut alice = connect(&broker, "alice-1", Some("alice")).await;
    // One SUBSCRIBE, one return code per filter, in order [MQTT-3.8.4-5] [MQTT-3.9.3-1].
    assert_eq!(alice.subscribe(&[("sensors/+/temp", Q1), ("secret/#", Q1)]).await, [GRANTED, REFUSED]);

    // The refused filter is not subscribed: what is published there does not arrive.
    let mut feeder = connect(&broker, "feeder-1", Some("feeder")).await;
    feeder.publish("secret/plans", b"refused", Q1, false).await;
    assert_nothing_before_marker(&mut feeder, &mut alice, "sensors/kitchen/temp").await;

    let mut anonymous = connect(&broker, "anon-1", None).await;
    assert_eq!(anonymous.subscribe(&[("sensors/#", Q1), ("public/#", Q1)]).await, [REFUSED, GRANTED]);
    let mut unknown = connect(&broker, "mallory-1", Some("mallory")).await;
    assert_eq!(unknown.subscribe(&[("public/#", Q1)]).await, [REFUSED], "a user without an entry is denied");

    broker.stop();
}

#[tokio::test]
async fn a_filter_must_be_covered_by_an_acl_filter() {
    let broker = start_broker_with(ACL);
    let mut alice = connect(&broker, "alice-1", Some("alice")).await;
    assert_eq!(
        alice.subscribe(&[("sensors/+/temp", Q1), ("sensors", Q1), ("#", Q1)]).await,
        [GRANTED, GRANTED, REFUSED]
    );
    let mut strict = connect(&broker, "strict-1", Some("strict")).await;
    assert_eq!(
        strict.subscribe(&[("sensors/#", Q1), ("sensors/+", Q1), ("sensors/a/b", Q1)]).await,
        [REFUSED, GRANTED, REFUSED],
        "`sensors/+` does not cover `sensors/#`, which reaches deeper levels"
    );

    // `#` does not reach `$` topics [MQTT-4.7.2-1]; only an explicit `$SYS/...` ACL does.
    let mut feeder = connect(&broker, "feeder-1", Some("feeder")).await;
    assert_eq!(feeder.subscribe(&[("$SYS/#", Q1), ("$SYS/broker/uptime", Q1)]).await, [REFUSED, REFUSED]);
    let mut admin = connect(&broker, "admin-1", Some("admin")).await;
    assert_eq!(admin.subscribe(&[("$SYS/broker/+", Q1)]).await, [GRANTED]);

    broker.stop();
}

#[tokio::test]
async fn refused_publish_is_acknowledged_but_not_routed() {
    let broker = start_broker_with(ACL);
    let mut watcher = feeder(&broker, "feeder-1").await;
    let mut alice = connect(&broker, "alice-1", Some("alice")).await;
    for qos in QOS_ALL {
        // The harness asserts the PUBACK, or PUBREC then PUBCOMP, of each flow [MQTT-4.3.2-2]
        // [MQTT-4.3.3-2]: a refused message is still acknowledged per its QoS.
        alice.publish("sensors/kitchen/humidity", b"refused", qos, false).await;
    }
    alice.publish("sensors/kitchen/humidity", b"refused and retained", Q1, true).await;
    assert_nothing_before_marker(&mut alice, &mut watcher, "sensors/kitchen/temp").await;

    // Nor was the refused retained message stored: a new subscriber gets nothing before the marker.
    let mut late = feeder(&broker, "feeder-2").await;
    assert_nothing_before_marker(&mut alice, &mut late, "sensors/kitchen/temp").await;
    let second_marker = watcher.recv_publish().await;
    assert_eq!(topic(&second_marker), "sensors/kitchen/temp");
    watcher.ack(&second_marker).await;

    // Anonymous clients use the `anonymous` entry; `%c` is their own client id.
    let mut anonymous = connect(&broker, "dev7", None).await;
    anonymous.publish("devices/dev8/state", b"refused", Q1, false).await;
    anonymous.publish("public/out", b"refused", Q1, false).await;
    assert_nothing_before_marker(&mut anonymous, &mut watcher, "devices/dev7/state").await;
    round_trip(&mut anonymous, &mut watcher, "public/in", b"allowed").await;

    broker.stop();
}

#[tokio::test]
async fn refused_receive_skips_that_subscriber_only() {
    let broker = start_broker_with(ACL);
    let mut alice = connect(&broker, "alice-1", Some("alice")).await;
    let mut bob = connect(&broker, "bob-1", Some("bob")).await;
    assert_eq!(alice.subscribe(&[("sensors/#", Q1)]).await, [GRANTED]);
    assert_eq!(bob.subscribe(&[("sensors/#", Q1)]).await, [GRANTED]);
    let mut feeder = connect(&broker, "feeder-1", Some("feeder")).await;

    feeder.publish("sensors/kitchen/humidity", b"for alice", Q1, false).await;
    let got = alice.recv_publish().await;
    assert_eq!((topic(&got), text(&got)), ("sensors/kitchen/humidity", "for alice"));
    alice.ack(&got).await;
    // Bob may subscribe to `sensors/#` but receive only `sensors/+/temp`.
    assert_nothing_before_marker(&mut feeder, &mut bob, "sensors/kitchen/temp").await;

    broker.stop();
}

#[tokio::test]
async fn percent_u_gives_each_user_their_own_tree() {
    let broker = start_broker_with(ACL);
    let mut watcher = feeder(&broker, "feeder-1").await;
    let mut carol = connect(&broker, "carol-1", Some("carol")).await;
    let mut dave = connect(&broker, "dave-1", Some("dave")).await;
    assert_eq!(
        carol.subscribe(&[("users/carol/#", Q1), ("users/dave/#", Q1), ("users/+/inbox", Q1)]).await,
        [GRANTED, REFUSED, REFUSED]
    );
    assert_eq!(dave.subscribe(&[("users/dave/#", Q1)]).await, [GRANTED]);

    carol.publish("users/dave/inbox", b"refused", Q1, false).await;
    assert_nothing_before_marker(&mut carol, &mut watcher, "users/carol/outbox").await;
    round_trip(&mut watcher, &mut dave, "users/dave/inbox", b"for dave").await;

    broker.stop();
}

#[tokio::test]
async fn amqtt_0_12_plugins_mapping() {
    let broker = start_broker_with(
        "
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
  amqtt.plugins.topic_checking.TopicAccessControlListPlugin:
    acl:
      alice: ['sensors/#']
      feeder: ['#']
    publish_acl:
      alice: ['sensors/+/temp']
      feeder: ['#']
",
    );
    let mut watcher = feeder(&broker, "feeder-1").await;
    let mut alice = connect(&broker, "alice-1", Some("alice")).await;
    assert_eq!(alice.subscribe(&[("sensors/#", Q1), ("secret/#", Q1)]).await, [GRANTED, REFUSED]);
    alice.publish("sensors/kitchen/humidity", b"refused", Q1, false).await;
    assert_nothing_before_marker(&mut alice, &mut watcher, "sensors/kitchen/temp").await;
    let own_marker = alice.recv_publish().await;
    assert_eq!(topic(&own_marker), "sensors/kitchen/temp", "alice is subscribed to what she published");
    alice.ack(&own_marker).await;
    // No `receive_acl`: receiving is not restricted.
    round_trip(&mut watcher, &mut alice, "sensors/kitchen/humidity", b"delivered").await;

    broker.stop();
}
