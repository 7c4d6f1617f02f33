//! The plugin host, end to end: chains built from the YAML, answers combined as in aMQTT,
//! plugins that wait, panic or listen to events, and start-up errors that name what is wrong.
//!
//! The plugins here are linked into this test binary and registered with `register_plugin!`,
//! exactly as a built-in plugin is; they answer NoOpinion to everyone they are not about, so
//! that the default configuration (every registered plugin runs) still lets clients in.

use std::sync::Mutex;

use amqtt_plugin_api::{
    async_trait, register_plugin, Action, Answer, AuthPlugin, ClientInfo, Event, EventPlugin, Interests, Plugin,
    PluginContext, PluginError, TopicCheckPlugin,
};
use amqtt_tests::*;
use tokio::sync::Notify;

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct NoSettings {}

/// Holds the CONNECT of user "gated" until the test opens the gate; panics for user "boom".
struct GatedAuth;

static GATE: Notify = Notify::const_new();

impl Plugin for GatedAuth {
    type Settings = NoSettings;
    fn new(_: NoSettings, _: &PluginContext) -> Result<Self, PluginError> {
        Ok(GatedAuth)
    }
}

#[async_trait]
impl AuthPlugin for GatedAuth {
    async fn authenticate(&self, client: &ClientInfo, _password: Option<&[u8]>) -> Answer {
        match client.username.as_deref() {
            Some("gated") => {
                GATE.notified().await;
                Answer::Allow
            }
            Some("boom") => panic!("this plugin panics for user boom"),
            _ => Answer::NoOpinion,
        }
    }
}

/// Denies `deny/...` topics for every action, after yielding once, so that the broker has to
/// take its asynchronous path; settings `marker` must be a string (to test setting errors).
struct YieldingTopicCheck;

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct TopicSettings {
    #[allow(dead_code)]
    marker: Option<String>,
}

impl Plugin for YieldingTopicCheck {
    type Settings = TopicSettings;
    fn new(_: TopicSettings, _: &PluginContext) -> Result<Self, PluginError> {
        Ok(YieldingTopicCheck)
    }
}

#[async_trait]
impl TopicCheckPlugin for YieldingTopicCheck {
    async fn check(&self, _client: &ClientInfo, topic: &str, _action: Action) -> Answer {
        tokio::task::yield_now().await;
        if topic.starts_with("deny/") {
            Answer::Deny
        } else {
            Answer::Allow
        }
    }
}

/// Records every event about clients whose id starts with `ev-`, and retained topics under
/// `ev/`.
struct Recorder;

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static EVENT_ARRIVED: Notify = Notify::const_new();

impl Plugin for Recorder {
    type Settings = NoSettings;
    fn new(_: NoSettings, _: &PluginContext) -> Result<Self, PluginError> {
        Ok(Recorder)
    }
}

#[async_trait]
impl EventPlugin for Recorder {
    fn interests(&self) -> Interests {
        Interests::ALL
    }

    async fn on_event(&self, event: &Event) {
        let line = match event {
            Event::ClientConnected { client } if client.client_id.starts_with("ev-") => {
                format!("connected {} {:?}", client.client_id, client.username)
            }
            Event::ClientDisconnected { client } if client.client_id.starts_with("ev-") => {
                format!("disconnected {}", client.client_id)
            }
            Event::Subscribed { client_id, filter, qos } if client_id.starts_with("ev-") => {
                format!("subscribed {client_id} {filter} {qos}")
            }
            Event::Unsubscribed { client_id, filter } if client_id.starts_with("ev-") => {
                format!("unsubscribed {client_id} {filter}")
            }
            Event::MessageReceived { client_id, topic, payload, qos, retain } if client_id.starts_with("ev-") => {
                format!("message {client_id} {topic} {} {qos} {retain}", String::from_utf8_lossy(payload))
            }
            Event::RetainedSet { topic, payload } if topic.starts_with("ev/") => {
                format!("retained {topic} {}", String::from_utf8_lossy(payload))
            }
            Event::RetainedCleared { topic } if topic.starts_with("ev/") => format!("cleared {topic}"),
            _ => return,
        };
        EVENTS.lock().unwrap().push(line);
        EVENT_ARRIVED.notify_waiters();
    }
}

register_plugin!(auth, "test_gated_auth", GatedAuth);
register_plugin!(topic_check, "test_yielding_check", YieldingTopicCheck, aliases = ["tests.YieldingTopicCheckPlugin"]);
register_plugin!(event, "test_recorder", Recorder);

fn user(client_id: &str, username: &str) -> Connect {
    Connect { username: Some(ByteString::from(username)), ..connect_packet(client_id, true) }
}

fn start_error(yaml: &str) -> String {
    let (config, _) = Config::from_yaml_str(yaml, None).expect("config loads");
    match Broker::new(config).workers(1).start() {
        Ok(_) => panic!("broker started with {yaml:?}"),
        Err(error) => error.to_string(),
    }
}

/// A plugin that waits (here: until the test opens a gate) holds up only the client it is
/// about: others connect and exchange messages meanwhile, and the waiting client is accepted,
/// and its packets sent right behind CONNECT handled, once the plugin answers.
#[tokio::test]
async fn a_waiting_auth_plugin_holds_up_only_its_own_client() {
    let broker = start_broker_with("auth:\n  plugins: [auth_anonymous, test_gated_auth]\n");
    let a = addr(&broker);
    let mut gated = TestClient::connect_raw(a).await;
    gated.send(user("gated-1", "gated")).await;
    gated.send(Packet::PingReq).await;

    let (mut subscriber, mut publisher) = subscriber_and_publisher(a, &[("meanwhile/#", QoS::AtLeastOnce)]).await;
    round_trip(&mut publisher, &mut subscriber, "meanwhile/t", b"not held up").await;

    GATE.notify_one();
    assert_eq!(
        gated.recv().await,
        Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::Accepted })
    );
    assert_eq!(gated.recv().await, Packet::PingResp);
    broker.stop();
}

/// A panicking plugin counts as a Deny [aMQTT semantics: every answer must allow]: a client
/// with a user name gets 0x04 and the broker keeps serving.
#[tokio::test]
async fn a_panicking_auth_plugin_denies_and_the_broker_carries_on() {
    let broker = start_broker_with("auth:\n  plugins: [auth_anonymous, test_gated_auth]\n");
    let (mut client, connack) = TestClient::connect_with(addr(&broker), user("boom-1", "boom")).await;
    assert_eq!(connack.code, ConnectReturnCode::BadUserNameOrPassword);
    client.expect_closed().await;
    let (mut other, _) = TestClient::connect(addr(&broker), "after-boom", true).await;
    other.ping().await;
    broker.stop();
}

/// aMQTT's chain rule: no-opinion answers are ignored, and a client is accepted only if some
/// plugin answered and every answer allows. `plugins: []` lets nobody in (0x05).
#[tokio::test]
async fn chain_rule_needs_one_allow_and_no_deny() {
    // Only a plugin without an opinion: nobody vouched.
    let broker = start_broker_with("auth:\n  plugins: [test_gated_auth]\n");
    let (_, connack) = TestClient::connect_with(addr(&broker), user("nobody-1", "alice")).await;
    assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
    broker.stop();

    let broker = start_broker_with("auth:\n  plugins: []\n");
    let (_, connack) = TestClient::connect_with(addr(&broker), connect_packet("empty-chain", true)).await;
    assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
    broker.stop();

    // One Allow among no-opinions: accepted; anonymous denied by auth_anonymous: 0x05.
    let broker = start_broker_with("auth:\n  plugins: [test_gated_auth, auth_anonymous]\n  allow-anonymous: false\n");
    let (_, connack) = TestClient::connect_with(addr(&broker), connect_packet("anon-1", true)).await;
    assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
    broker.stop();
}

/// With topic checks answered asynchronously: a refused filter gets 0x80 beside the granted
/// one [MQTT-3.9.3-2], a refused publish is acknowledged but not routed, and the allowed
/// messages still arrive in order [MQTT-4.6.0-6].
#[tokio::test]
async fn asynchronous_topic_checks_keep_order_and_refuse_what_they_deny() {
    let broker = start_broker_with("topic-check:\n  enabled: true\n  plugins: [test_yielding_check]\n");
    let a = addr(&broker);
    let (mut subscriber, _) = TestClient::connect(a, "check-sub", true).await;
    assert_eq!(
        subscriber.subscribe(&[("deny/#", QoS::AtLeastOnce), ("ok/#", QoS::AtLeastOnce)]).await,
        [SubscribeReturnCode::Failure, SubscribeReturnCode::Success(QoS::AtLeastOnce)]
    );
    let (mut publisher, _) = TestClient::connect(a, "check-pub", true).await;
    for i in 0..50u32 {
        publisher.publish("ok/seq", i.to_string().as_bytes(), QoS::AtLeastOnce, false).await;
        // Acknowledged (the flow completes inside `publish`) although never routed.
        publisher.publish("deny/seq", b"refused", QoS::AtLeastOnce, false).await;
    }
    for i in 0..50u32 {
        let publish = subscriber.recv_publish().await;
        assert_eq!((topic(&publish), text(&publish)), ("ok/seq", i.to_string().as_str()));
        subscriber.ack(&publish).await;
    }
    broker.stop();
}

/// A will whose topic the topic checks refuse is refused at CONNECT (0x05), rather than
/// accepted and then silently never published.
#[tokio::test]
async fn a_will_to_a_refused_topic_refuses_the_connect() {
    let broker = start_broker_with("topic-check:\n  enabled: true\n  plugins: [test_yielding_check]\n");
    let connect = Connect {
        will: Some(last_will("deny/will", b"x", QoS::AtMostOnce, false)),
        ..connect_packet("will-refused", true)
    };
    let (_, connack) = TestClient::connect_with(addr(&broker), connect).await;
    assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
    broker.stop();
}

/// Event plugins hear, in order: connected, subscribed, message received, retained set and
/// cleared, unsubscribed, disconnected.
#[tokio::test]
async fn event_plugins_hear_what_happens_in_order() {
    let broker = start_broker_with("plugins: [auth_anonymous, test_recorder]\n");
    let (mut client, _) = TestClient::connect_accepted(addr(&broker), user("ev-1", "eve")).await;
    client.subscribe(&[("ev/#", QoS::AtLeastOnce)]).await;
    client.publish("ev/a", b"hello", QoS::AtLeastOnce, true).await;
    let publish = client.recv_publish().await;
    client.ack(&publish).await;
    client.publish("ev/a", b"", QoS::AtMostOnce, true).await;
    // The UNSUBSCRIBE right behind it does not overtake it: the message comes back first.
    client.send(Unsubscribe { pkid: 90, filters: vec![ByteString::from_static("ev/#")] }).await;
    assert_eq!(client.recv_publish().await.payload, b"".as_slice());
    assert_eq!(client.recv().await, Packet::UnsubAck(UnsubAck { pkid: 90 }));
    client.disconnect().await;
    let expected = [
        "connected ev-1 Some(\"eve\")",
        "subscribed ev-1 ev/# 1",
        "message ev-1 ev/a hello 1 true",
        "retained ev/a hello",
        "message ev-1 ev/a  0 true",
        "cleared ev/a",
        "unsubscribed ev-1 ev/#",
        "disconnected ev-1",
    ];
    let recorded = tokio::time::timeout(WAIT, async {
        loop {
            let arrived = EVENT_ARRIVED.notified();
            let events = EVENTS.lock().unwrap().clone();
            if events.len() >= expected.len() {
                return events;
            }
            arrived.await;
        }
    })
    .await
    .expect("every event arrives");
    // The router and the session send their events separately: compare per source, in order.
    let from_session: Vec<_> = recorded
        .iter()
        .filter(|e| {
            !e.starts_with("retained")
                && !e.starts_with("cleared")
                && !e.starts_with("subscribed")
                && !e.starts_with("unsubscribed")
        })
        .collect();
    assert_eq!(from_session, [expected[0], expected[2], expected[4], expected[7]]);
    let from_router: Vec<_> = recorded
        .iter()
        .filter(|e| {
            e.starts_with("retained")
                || e.starts_with("cleared")
                || e.starts_with("subscribed")
                || e.starts_with("unsubscribed")
        })
        .collect();
    assert_eq!(from_router, [expected[1], expected[3], expected[5], expected[6]]);
    broker.stop();
}

/// aMQTT 0.12's `plugins:` mapping: plugins by class name (ours by plain name) with their own
/// settings; its logging plugins are accepted (the broker logs by itself).
#[tokio::test]
async fn amqtt_012_plugins_mapping_starts_unchanged() {
    let yaml = "
plugins:
  amqtt.plugins.logging_amqtt.EventLoggerPlugin:
  amqtt.plugins.logging_amqtt.PacketLoggerPlugin:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: ALLOW
  tests.YieldingTopicCheckPlugin:
";
    let broker = start_broker_with(&yaml.replace("ALLOW", "false"));
    let (_, connack) = TestClient::connect_with(addr(&broker), connect_packet("anon-012", true)).await;
    assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
    broker.stop();

    let broker = start_broker_with(&yaml.replace("ALLOW", "true"));
    let (mut client, _) = TestClient::connect(addr(&broker), "anon-012", true).await;
    // The topic-check plugin listed in the mapping is enabled by being listed.
    assert_eq!(
        client.subscribe(&[("deny/x", QoS::AtMostOnce), ("ok/x", QoS::AtMostOnce)]).await,
        [SubscribeReturnCode::Failure, SubscribeReturnCode::Success(QoS::AtMostOnce)]
    );
    broker.stop();
}

/// Start-up fails, naming the problem, for a plugin nobody provides (listing those that exist),
/// a plugin in the wrong chain, a bad setting, and an unknown setting of a `plugins:` entry.
#[test]
fn misconfigured_plugins_stop_start_up_with_a_clear_error() {
    let listener = "listeners:\n  default:\n    bind: 127.0.0.1:0\n";
    let error = start_error(&format!("{listener}auth:\n  plugins: [auth_anonymous, ldap_auth]\n"));
    assert!(error.starts_with("auth.plugins: no plugin called `ldap_auth`; available: "), "{error}");
    assert!(error.contains("auth_anonymous (auth)") && error.contains("test_recorder (event)"), "{error}");

    let error = start_error(&format!("{listener}auth:\n  plugins: [test_yielding_check]\n"));
    assert_eq!(error, "auth.plugins: `test_yielding_check` is a topic-check plugin, not an auth plugin");

    let error = start_error(&format!("{listener}auth:\n  allow-anonymous: perhaps\n"));
    assert!(error.starts_with("auth: plugin auth_anonymous: setting allow-anonymous: invalid value"), "{error}");

    let error = start_error(&format!("{listener}plugins:\n  test_yielding_check:\n    markr: x\n"));
    assert_eq!(error, "plugins.test_yielding_check.markr: unknown setting of plugin test_yielding_check");

    let error = start_error(&format!("{listener}plugins:\n  amqtt.plugins.Nope:\n"));
    assert!(error.starts_with("plugins.amqtt.plugins.Nope: no plugin called `amqtt.plugins.Nope`"), "{error}");
}
