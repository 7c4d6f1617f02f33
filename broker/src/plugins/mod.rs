//! The plugin host: the chains of auth and topic-check plugins the configuration names, and
//! the event plugins, built once at start-up (`setup`) and asked by every session.
//!
//! A chain's answer is aMQTT's: no-opinion answers are ignored, and a request is allowed only
//! if at least one plugin answered and every answer is Allow. A plugin that panics answers
//! Deny. Plugin calls are async, but the chains are polled once before anything is awaited: a
//! plugin that answers without I/O (all the built-in ones) costs a session no suspension.

mod dynamic;
mod events;
mod failed_logins;
pub(crate) mod setup;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use amqtt_plugin_api::{Action, Answer, AuthPlugin, ClientInfo, Event, TopicCheckPlugin};
use futures_util::FutureExt;
use tracing::{debug, error};

use crate::stats::Stats;

pub(crate) use events::{BrokerApi, EventBus};
use failed_logins::FailedLogins;
pub use setup::PluginSetupError;

// The built-in plugins register themselves with `inventory`; naming the crates makes sure the
// linker keeps them.
use amqtt_auth_anonymous as _;
use amqtt_auth_file as _;
use amqtt_sys_topics as _;
use amqtt_topic_acl as _;

/// A plugin of a chain, with the name it was enabled under (for logs).
struct Named<T: ?Sized> {
    name: String,
    plugin: Arc<T>,
}

/// Everything the sessions and the router ask of plugins.
pub(crate) struct PluginHost {
    auth: Vec<Named<dyn AuthPlugin>>,
    /// Addresses refused before the auth chain runs, for failing too often.
    failed_logins: FailedLogins,
    /// None when `topic-check` is not enabled: then nothing is checked at all.
    topic_checks: Option<Vec<Named<dyn TopicCheckPlugin>>>,
    events: EventBus,
}

/// What the auth chain decided about a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    Accepted,
    /// A plugin denied a client that gave a username: CONNACK 0x04.
    BadCredentials,
    /// Denied otherwise, or nobody had an opinion, or the address had too many failed logins
    /// of late: CONNACK 0x05.
    NotAuthorized,
}

impl PluginHost {
    pub(crate) fn events(&self) -> &EventBus {
        &self.events
    }

    pub(crate) fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    pub(crate) fn topic_checks_enabled(&self) -> bool {
        self.topic_checks.is_some()
    }

    /// Runs the auth chain for a connecting client.
    ///
    /// `certificate_vouches`: the client's user name was taken from its verified TLS client
    /// certificate (`use-identity-as-username`). As in mosquitto, the certificate is then the
    /// credential, so it counts as one more Allow in the chain: such a client needs no password
    /// and no plugin's Allow, but a plugin that denies it (a password file that lists the user,
    /// with a password the client did not give) still refuses it.
    ///
    /// An address with too many failed logins of late is refused before any plugin is asked
    /// (see `failed_logins`); every refusal by the chain counts as a failed login.
    pub(crate) fn authenticate(
        self: &Arc<Self>,
        client: Arc<ClientInfo>,
        password: Option<bytes::Bytes>,
        certificate_vouches: bool,
        stats: &Arc<Stats>,
    ) -> impl Future<Output = AuthOutcome> + 'static {
        let host = self.clone();
        let stats = stats.clone();
        async move {
            let ip = client.peer.ip();
            if host.failed_logins.is_banned(ip, Instant::now()) {
                stats.login_rate_limited();
                debug!(peer = %client.peer, client_id = %client.client_id, "too many failed logins: refused unchecked");
                return AuthOutcome::NotAuthorized;
            }
            let mut answers = Vec::with_capacity(host.auth.len() + 1);
            if certificate_vouches {
                answers.push(Answer::Allow);
            }
            for Named { name, plugin } in &host.auth {
                let call = plugin.authenticate(&client, password.as_deref());
                answers.push(guarded(name, "authenticate", call).await);
            }
            let outcome = match combine(answers) {
                Answer::Allow => AuthOutcome::Accepted,
                // Only an explicit Deny of a client that gave a username is about its credentials.
                Answer::Deny if client.username.is_some() => AuthOutcome::BadCredentials,
                _ => AuthOutcome::NotAuthorized,
            };
            if outcome != AuthOutcome::Accepted {
                stats.login_failed();
                host.failed_logins.failed(ip, Instant::now());
            }
            outcome
        }
    }

    /// Asks the topic-check chain about each topic; `true` where the action is allowed. All
    /// allowed when topic checks are not enabled.
    pub(crate) fn check_topics(
        self: &Arc<Self>,
        client: Arc<ClientInfo>,
        topics: Vec<String>,
        action: Action,
    ) -> impl Future<Output = Vec<bool>> + 'static {
        let host = self.clone();
        async move {
            let Some(chain) = &host.topic_checks else { return vec![true; topics.len()] };
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            let mut per_topic: Vec<Vec<Answer>> = vec![Vec::with_capacity(chain.len()); topics.len()];
            for Named { name, plugin } in chain {
                let answers = guarded_many(name, plugin.check_many(&client, &refs, action), refs.len()).await;
                for (topic_answers, answer) in per_topic.iter_mut().zip(answers) {
                    topic_answers.push(answer);
                }
            }
            per_topic.into_iter().map(|answers| combine(answers) == Answer::Allow).collect()
        }
    }
}

/// The chain rule: Deny if anyone denied, else Allow if anyone allowed, else NoOpinion (which
/// refuses: nobody vouched for the request).
fn combine(answers: impl IntoIterator<Item = Answer>) -> Answer {
    let mut allowed = false;
    for answer in answers {
        match answer {
            Answer::Deny => return Answer::Deny,
            Answer::Allow => allowed = true,
            Answer::NoOpinion => {}
        }
    }
    if allowed {
        Answer::Allow
    } else {
        Answer::NoOpinion
    }
}

/// A plugin call whose panic is caught and taken as Deny.
async fn guarded(name: &str, call: &str, answer: impl Future<Output = Answer>) -> Answer {
    match AssertUnwindSafe(answer).catch_unwind().await {
        Ok(answer) => answer,
        Err(_) => {
            error!(plugin = name, call, "plugin panicked: answering deny");
            Answer::Deny
        }
    }
}

async fn guarded_unit(name: &str, call: impl Future<Output = ()>) {
    if AssertUnwindSafe(call).catch_unwind().await.is_err() {
        error!(plugin = name, "plugin panicked while handling an event");
    }
}

async fn guarded_many(name: &str, answers: impl Future<Output = Vec<Answer>>, expected: usize) -> Vec<Answer> {
    match AssertUnwindSafe(answers).catch_unwind().await {
        Ok(answers) if answers.len() == expected => answers,
        Ok(answers) => {
            error!(plugin = name, expected, got = answers.len(), "plugin answered the wrong number of topics: deny");
            vec![Answer::Deny; expected]
        }
        Err(_) => {
            error!(plugin = name, call = "check", "plugin panicked: answering deny");
            vec![Answer::Deny; expected]
        }
    }
}
