//! The plugin as the broker sees it: found in the registry, built from YAML, asked per action.

use amqtt_plugin_api::{abi, registrations, Instance, Kind, Value};

use super::*;

const ALL_ACTIONS: [Action; 3] = [Action::Subscribe, Action::Publish, Action::Receive];

fn build(yaml: &str) -> Result<(TopicAcl, Vec<String>), PluginError> {
    let value: Value = yaml_serde::from_str(yaml).expect("test YAML");
    let (settings, unknown) = amqtt_plugin_api::parse_settings::<Settings>(&value, &PluginContext::default())?;
    Ok((TopicAcl::new(settings, &PluginContext::default())?, unknown))
}

fn acl(yaml: &str) -> TopicAcl {
    build(yaml).expect("valid settings").0
}

fn client(username: Option<&str>, client_id: &str) -> ClientInfo {
    ClientInfo {
        client_id: client_id.into(),
        username: username.map(Into::into),
        peer: "127.0.0.1:5000".parse().unwrap(),
        cert_subject: None,
        clean_session: true,
    }
}

const FULL: &str = "
enabled: true
plugins: [topic_acl]
acl:
  alice: ['sensors/#', 'users/%u/#']
  anonymous: ['public/#']
  nobody: []
publish-acl:
  alice: ['sensors/+/temp', 'devices/%c/#']
  anonymous: ['public/in']
receive-acl:
  alice: ['sensors/#']
  anonymous: ['public/#']
";

#[test]
fn each_action_uses_its_own_map() {
    let plugin = acl(FULL);
    let alice = client(Some("alice"), "dev1");
    let anonymous = client(None, "anon1");
    let bob = client(Some("bob"), "dev2");
    let nobody = client(Some("nobody"), "dev3");
    let cases = [
        (&alice, Action::Subscribe, "sensors/+/temp", Answer::Allow),
        (&alice, Action::Subscribe, "users/alice/#", Answer::Allow),
        (&alice, Action::Subscribe, "users/bob/#", Answer::Deny),
        (&alice, Action::Subscribe, "public/news", Answer::Deny),
        (&alice, Action::Publish, "sensors/kitchen/temp", Answer::Allow),
        (&alice, Action::Publish, "sensors/kitchen/humidity", Answer::Deny),
        (&alice, Action::Publish, "devices/dev1/state", Answer::Allow),
        (&alice, Action::Publish, "devices/dev2/state", Answer::Deny),
        (&alice, Action::Receive, "sensors/kitchen/humidity", Answer::Allow),
        (&alice, Action::Receive, "devices/dev1/state", Answer::Deny),
        (&anonymous, Action::Subscribe, "public/#", Answer::Allow),
        (&anonymous, Action::Subscribe, "sensors/#", Answer::Deny),
        (&anonymous, Action::Publish, "public/in", Answer::Allow),
        (&anonymous, Action::Publish, "public/out", Answer::Deny),
        (&anonymous, Action::Receive, "public/out", Answer::Allow),
        (&bob, Action::Subscribe, "public/#", Answer::Deny),
        (&bob, Action::Publish, "public/in", Answer::Deny),
        (&bob, Action::Receive, "public/in", Answer::Deny),
        (&nobody, Action::Subscribe, "anything", Answer::Deny),
        (&alice, Action::Subscribe, "", Answer::Deny),
        (&alice, Action::Subscribe, "$SYS/#", Answer::Deny),
        (&alice, Action::Receive, "$SYS/broker/uptime", Answer::Deny),
    ];
    for (who, action, topic, expected) in cases {
        assert_eq!(plugin.decide(who, topic, action), expected, "{:?} {action:?} {topic:?}", who.username);
    }
}

#[test]
fn absent_maps_allow_their_action() {
    let plugin = acl("enabled: true");
    for action in ALL_ACTIONS {
        assert_eq!(plugin.decide(&client(Some("bob"), "c"), "any/topic", action), Answer::Allow, "{action:?}");
        assert_eq!(plugin.decide(&client(None, "c"), "$SYS/#", action), Answer::Allow, "{action:?}");
    }

    let only_subscribe = acl("acl: {alice: ['a/#']}");
    let bob = client(Some("bob"), "c");
    assert_eq!(only_subscribe.decide(&bob, "a/b", Action::Subscribe), Answer::Deny);
    assert_eq!(only_subscribe.decide(&bob, "a/b", Action::Publish), Answer::Allow, "aMQTT: no publish-acl, open");
    assert_eq!(only_subscribe.decide(&bob, "a/b", Action::Receive), Answer::Allow);

    let only_publish = acl("publish-acl: {alice: ['a/#']}");
    assert_eq!(only_publish.decide(&bob, "a/b", Action::Subscribe), Answer::Allow);
    assert_eq!(only_publish.decide(&bob, "a/b", Action::Publish), Answer::Deny);
}

#[test]
fn a_written_but_empty_map_denies_everyone() {
    let plugin = acl("publish-acl:\nreceive-acl: {}");
    let alice = client(Some("alice"), "c");
    assert_eq!(plugin.decide(&alice, "a", Action::Publish), Answer::Deny);
    assert_eq!(plugin.decide(&alice, "a", Action::Receive), Answer::Deny);
    assert_eq!(plugin.decide(&alice, "a", Action::Subscribe), Answer::Allow);
}

#[test]
fn anonymous_entry_is_for_clients_without_username() {
    let plugin = acl("acl: {anonymous: ['public/#'], alice: ['private/#']}");
    let anonymous = client(None, "c");
    assert_eq!(plugin.decide(&anonymous, "public/x", Action::Subscribe), Answer::Allow);
    assert_eq!(plugin.decide(&anonymous, "private/x", Action::Subscribe), Answer::Deny);
    let alice = client(Some("alice"), "c");
    assert_eq!(plugin.decide(&alice, "public/x", Action::Subscribe), Answer::Deny, "a named user is not anonymous");
    let no_anonymous = acl("acl: {alice: ['#']}");
    assert_eq!(no_anonymous.decide(&anonymous, "x", Action::Subscribe), Answer::Deny);
}

#[test]
fn percent_u_never_matches_without_username() {
    let plugin = acl("publish-acl: {anonymous: ['users/%u/#', 'devices/%c']}");
    let anonymous = client(None, "dev9");
    assert_eq!(plugin.decide(&anonymous, "users//x", Action::Publish), Answer::Deny);
    assert_eq!(plugin.decide(&anonymous, "users/anonymous/x", Action::Publish), Answer::Deny);
    assert_eq!(plugin.decide(&anonymous, "devices/dev9", Action::Publish), Answer::Allow);
}

#[test]
fn every_spelling_of_every_key() {
    let alice = client(Some("alice"), "c");
    for key in ["acl", "subscribe-acl", "subscribe_acl"] {
        let plugin = acl(&format!("{key}: {{alice: ['x']}}"));
        assert_eq!(plugin.decide(&alice, "y", Action::Subscribe), Answer::Deny, "{key}");
        assert_eq!(plugin.decide(&alice, "x", Action::Subscribe), Answer::Allow, "{key}");
    }
    for (key, action) in [
        ("publish-acl", Action::Publish),
        ("publish_acl", Action::Publish),
        ("receive-acl", Action::Receive),
        ("receive_acl", Action::Receive),
    ] {
        let plugin = acl(&format!("{key}: {{alice: ['x']}}"));
        assert_eq!(plugin.decide(&alice, "y", action), Answer::Deny, "{key}");
        assert_eq!(plugin.decide(&alice, "x", action), Answer::Allow, "{key}");
    }
}

#[test]
fn other_keys_of_the_section_come_back_unknown() {
    let (_, unknown) = build(FULL).unwrap();
    assert_eq!(unknown, ["enabled", "plugins"]);
    let (_, unknown) = build("acl: {a: [x]}\nallow-anonymous: true").unwrap();
    assert_eq!(unknown, ["allow-anonymous"]);
}

#[test]
fn numeric_usernames_and_empty_entries() {
    let plugin = acl("acl:\n  1234: ['meters/1234/#']\n  ghost:\n");
    let meter = client(Some("1234"), "c");
    assert_eq!(plugin.decide(&meter, "meters/1234/kwh", Action::Subscribe), Answer::Allow);
    assert_eq!(plugin.decide(&client(Some("ghost"), "c"), "x", Action::Subscribe), Answer::Deny);
}

#[test]
fn bad_settings_name_the_key() {
    let error = build("publish-acl: {alice: ['ok/#', 'bad/#/x']}").unwrap_err();
    match &error {
        PluginError::InvalidSetting { key, reason } => {
            assert_eq!(key, "publish-acl.alice[1]");
            assert!(reason.contains("bad/#/x") && reason.contains("`#`"), "{reason}");
        }
        other => panic!("expected InvalidSetting, got {other:?}"),
    }
    let error = build("acl: {alice: 'sensors/#'}").unwrap_err();
    assert!(matches!(&error, PluginError::InvalidSetting { key, .. } if key.starts_with("acl")), "{error:?}");
    let error = build("receive-acl: [a, b]").unwrap_err();
    assert!(matches!(&error, PluginError::InvalidSetting { key, .. } if key == "receive-acl"), "{error:?}");
    assert!(build("acl: {alice: ['']}").is_err());
}

#[test]
fn registered_under_its_name_and_amqtt_class_and_answers_without_awaiting() {
    for name in ["topic_acl", "amqtt.plugins.topic_checking.TopicAccessControlListPlugin"] {
        let registration = registrations().find(|r| r.answers_to(name)).expect(name);
        assert_eq!(registration.kind, Kind::TopicCheck);
        assert_eq!(registration.name, "topic_acl");
    }
    let registration = registrations().find(|r| r.answers_to("topic_acl")).unwrap();
    let value: Value = yaml_serde::from_str("publish_acl: {alice: ['a/+']}").unwrap();
    let built = (registration.build)(&value, &PluginContext::default()).unwrap();
    let Instance::TopicCheck(plugin) = built.instance else { panic!("not a topic-check plugin") };

    let alice = client(Some("alice"), "c");
    let mut check = plugin.check(&alice, "a/b", Action::Publish);
    let waker = std::task::Waker::noop();
    let ready = check.as_mut().poll(&mut std::task::Context::from_waker(waker));
    assert_eq!(ready, std::task::Poll::Ready(Answer::Allow), "answers on the first poll");

    let answers = abi::block_on(plugin.check_many(&alice, &["a/b", "a/b/c", "b"], Action::Publish));
    assert_eq!(answers, [Answer::Allow, Answer::Deny, Answer::Deny]);
}
