//! The router: the one actor that knows every client session, every subscription and every
//! retained message.
//!
//! Sessions send it batches of PUBLISH packets; it matches each against the subscription tree
//! and answers with one `Deliver` batch per destination session, so mailbox traffic grows with
//! batches, not with messages. Payloads are `Bytes`, shared by every copy of a message.
//!
//! It is also the registry of client identifiers: it decides which session actor owns a client
//! id, tells the previous owner to step down on a takeover [MQTT-3.1.4-2], and hands the state
//! of a persistent session from the old actor to the new one.

mod admission;
mod durable;
mod retained;
mod shutdown;
mod subscriptions;

use std::collections::HashMap;
use std::mem;
use std::sync::Arc;

use actix::prelude::*;
use amqtt_plugin_api::Event;
use amqtt_protocol::{ByteString, Publish, QoS, SubscribeFilter, SubscribeReturnCode};
use bytes::Bytes;
use tracing::{debug, info};

use crate::plugins::PluginHost;
use crate::session::{Deliver, Drain, Routed, Session, SessionState, SubscribeDone, TakeOver, UnsubscribeDone};
use crate::stats::Stats;
use crate::storage::{Change, MessageState, SessionRecord, StoredMessage};
use admission::{Backlog, Clock, ParkedRoute, ParkedRoutes};
pub(crate) use admission::{Marks, Progress};
pub(crate) use durable::Durable;
use retained::RetainedStore;
pub(crate) use shutdown::Shutdown;
use subscriptions::{Slot, Subscriber, SubscriptionTree};

/// Settings the router enforces.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Subscriptions one client may hold; 0 means unlimited.
    pub max_subscriptions_per_client: usize,
    /// The sessions' queue limit, from which admission control derives its marks.
    pub max_queued_messages: usize,
}

struct Client {
    id: ByteString,
    session: Addr<Session>,
    /// Changes at every (re)connection, so a late message from a replaced session actor is
    /// recognised and ignored.
    generation: u64,
    clean_session: bool,
    filters: HashMap<ByteString, QoS>,
    /// Deliveries collected while routing one batch, sent as one message at its end.
    pending: Vec<Publish>,
    /// With persistence, for a persistent client only (boxed: every client pays for the field).
    stored: Option<Box<StoredClient>>,
    backlog: Backlog,
}

/// What the router keeps for a persistent client when persistence is on.
#[derive(Default)]
struct StoredClient {
    /// Where each delivery of `Client::pending` is kept (0: not kept).
    pending_seqs: Vec<u64>,
    /// The last seq given to a message for this client.
    last_seq: u64,
}

impl Client {
    fn new(id: ByteString, session: Addr<Session>, generation: u64, clean_session: bool) -> Self {
        Client {
            id,
            session,
            generation,
            clean_session,
            filters: HashMap::new(),
            pending: Vec::new(),
            stored: None,
            backlog: Backlog::default(),
        }
    }

    /// Sends a batch of deliveries to the session, counting it in the backlog.
    fn deliver(&mut self, batch: Vec<Publish>, seqs: Vec<u64>) {
        self.backlog.sent(batch.len());
        self.session.do_send(Deliver { batch, seqs });
    }

    /// Gives `publish`, about to be delivered to this client, its place in the store when this
    /// client's session is persistent (seq 0, not kept, for QoS 0), and records it.
    fn keep(&mut self, durable: Option<&mut Durable>, publish: &Publish) {
        let Some(durable) = durable.filter(|_| !self.clean_session) else { return };
        let stored = self.stored.get_or_insert_with(Box::default);
        if publish.qos == QoS::AtMostOnce {
            stored.pending_seqs.push(0);
            return;
        }
        stored.last_seq += 1;
        let seq = stored.last_seq;
        stored.pending_seqs.push(seq);
        let message = StoredMessage {
            state: MessageState::Queued,
            qos: publish.qos,
            retain: publish.retain,
            topic: publish.topic.clone(),
            payload: publish.payload.clone(),
        };
        durable.record(Change::MessageSaved { client_id: self.id.clone(), seq, message });
    }

    /// The seqs of `pending` (see `StoredClient`), for the `Deliver` that takes `pending`.
    fn take_pending_seqs(&mut self) -> Vec<u64> {
        self.stored.as_mut().map(|stored| mem::take(&mut stored.pending_seqs)).unwrap_or_default()
    }

    /// This persistent session as the store keeps it.
    fn record(&self, disconnected_at: Option<u64>) -> Change {
        let subscriptions = self.filters.iter().map(|(filter, qos)| (filter.clone(), *qos)).collect();
        Change::SessionSaved { client_id: self.id.clone(), record: SessionRecord { subscriptions, disconnected_at } }
    }
}

pub struct Router {
    settings: RouterSettings,
    stats: Arc<Stats>,
    /// For the subscription and retained-message events plugins may want.
    plugins: Arc<PluginHost>,
    /// Where durable changes go, when persistence is enabled.
    durable: Option<Durable>,
    /// Boxed, so the table's spare capacity costs a pointer per slot, not a whole client.
    clients: Vec<Option<Box<Client>>>,
    free_slots: Vec<Slot>,
    by_id: HashMap<ByteString, Slot>,
    tree: SubscriptionTree,
    retained: RetainedStore,
    next_generation: u64,
    // Scratch space reused for every batch, so routing allocates nothing per message.
    matched: Vec<Subscriber>,
    touched: Vec<Slot>,
    /// Admission control (see `admission`): batches waiting for room at a subscriber.
    parked: ParkedRoutes,
    marks: Marks,
    clock: Clock,
    /// Retries the parked batches once a full subscriber may count as stalled.
    stall_timer: Option<SpawnHandle>,
    /// The broker is shutting down (see `shutdown`): nothing more is routed.
    stopping: bool,
}

impl Router {
    pub(crate) fn new(
        settings: RouterSettings,
        stats: Arc<Stats>,
        plugins: Arc<PluginHost>,
        durable: Option<Durable>,
    ) -> Self {
        Router {
            marks: Marks::new(settings.max_queued_messages),
            settings,
            stats,
            plugins,
            durable,
            clients: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            tree: SubscriptionTree::default(),
            retained: RetainedStore::default(),
            next_generation: 0,
            matched: Vec::new(),
            touched: Vec::new(),
            parked: ParkedRoutes::default(),
            clock: Clock::new(),
            stall_timer: None,
            stopping: false,
        }
    }

    fn client_mut(&mut self, slot: Slot) -> Option<&mut Client> {
        self.clients.get_mut(slot as usize).and_then(Option::as_deref_mut)
    }

    /// The slot of `client_id` if `generation` is still its current connection.
    fn current_slot(&self, client_id: &str, generation: u64) -> Option<Slot> {
        let slot = *self.by_id.get(client_id)?;
        let client = self.clients.get(slot as usize)?.as_ref()?;
        (client.generation == generation).then_some(slot)
    }

    fn insert_client(&mut self, client: Client) -> Slot {
        let id = client.id.clone();
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.clients[slot as usize] = Some(Box::new(client));
                slot
            }
            None => {
                self.clients.push(Some(Box::new(client)));
                (self.clients.len() - 1) as Slot
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    fn remove_client(&mut self, slot: Slot, ctx: &mut Context<Self>) {
        if let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::take) {
            if let Some(durable) = self.durable.as_mut().filter(|_| !client.clean_session) {
                durable.save(vec![Change::SessionRemoved { client_id: client.id.clone(), superseded_by: None }]);
            }
            for filter in client.filters.keys() {
                self.tree.remove(filter, slot);
            }
            self.stats.set_subscriptions(self.tree.len());
            self.by_id.remove(&client.id);
            self.free_slots.push(slot);
            // Whatever waited for it goes on without it.
            self.retry_parked(ctx);
        }
    }

    /// Retained messages saved by an earlier run.
    pub(crate) fn restore_retained(&mut self, retained: Vec<(ByteString, QoS, Bytes)>) {
        for (topic, qos, payload) in retained {
            self.retained.set(Publish { dup: false, qos, retain: true, topic, pkid: 0, payload });
        }
        self.stats.set_retained(self.retained.len());
    }

    fn clear_subscriptions(&mut self, slot: Slot) {
        let Some(client) = self.client_mut(slot) else { return };
        let filters = mem::take(&mut client.filters);
        for filter in filters.keys() {
            self.tree.remove(filter, slot);
        }
        self.stats.set_subscriptions(self.tree.len());
    }

    /// Matches one message and queues its deliveries, unless a subscriber has no room for it
    /// and `publisher` must wait (see `admission`): then nothing is done and false returned.
    fn route(&mut self, publish: &Publish, publisher: Option<&Addr<Session>>) -> bool {
        let mut matched = mem::take(&mut self.matched);
        matched.clear();
        self.tree.matches(&publish.topic, &mut matched);
        if matched.len() > 1 {
            // A client with overlapping subscriptions gets the message once, at the highest
            // QoS granted among them [MQTT-3.3.5-1].
            matched.sort_unstable_by(|a, b| a.slot.cmp(&b.slot).then(b.qos.cmp(&a.qos)));
            matched.dedup_by_key(|s| s.slot);
        }
        if let Some(publisher) = publisher {
            let (marks, clock) = (self.marks, &self.clock);
            let full = matched.iter().any(|subscriber| {
                self.clients.get_mut(subscriber.slot as usize).and_then(Option::as_mut).is_some_and(|client| {
                    // A client is never held back by its own subscriptions.
                    client.session != *publisher && client.backlog.is_full(client.pending.len(), marks, clock)
                })
            });
            if full {
                self.matched = matched;
                return false;
            }
        }
        if publish.retain {
            self.retain(publish);
        }
        for subscriber in &matched {
            let Some(client) = self.clients.get_mut(subscriber.slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            if client.pending.is_empty() {
                self.touched.push(subscriber.slot);
            }
            let delivery = Publish {
                dup: false,
                // Delivered at the lower of the published and the granted QoS [MQTT-3.8.4-6].
                qos: publish.qos.min(subscriber.qos),
                // Forwarded to existing subscriptions with RETAIN cleared [MQTT-3.3.1-9].
                retain: false,
                topic: publish.topic.clone(),
                pkid: 0,
                payload: publish.payload.clone(),
            };
            client.keep(self.durable.as_mut(), &delivery);
            client.pending.push(delivery);
        }
        self.matched = matched;
        true
    }

    /// Sets or clears the retained message of `publish`'s topic.
    fn retain(&mut self, publish: &Publish) {
        if self.plugins.events().interests().retained {
            let topic = publish.topic.to_string();
            self.plugins.emit(if publish.payload.is_empty() {
                Event::RetainedCleared { topic }
            } else {
                Event::RetainedSet { topic, payload: publish.payload.clone() }
            });
        }
        if let Some(durable) = &mut self.durable {
            let topic = publish.topic.clone();
            durable.record(if publish.payload.is_empty() {
                Change::RetainedCleared { topic }
            } else {
                Change::RetainedSet { topic, qos: publish.qos, payload: publish.payload.clone() }
            });
        }
        self.retained.set(publish.clone());
        self.stats.set_retained(self.retained.len());
    }

    /// Routes what is left of a batch, in order, until a message must wait. Returns the rest,
    /// if any.
    fn route_batch(
        &mut self,
        mut rest: std::vec::IntoIter<Publish>,
        publisher: Option<&Addr<Session>>,
    ) -> Option<std::vec::IntoIter<Publish>> {
        while let Some(publish) = rest.as_slice().first() {
            if !self.route(publish, publisher) {
                return Some(rest);
            }
            rest.next();
        }
        None
    }

    /// Sends every client what was routed to it since the last call. Only once the store has
    /// what routing changed (`finish`): a persistent session's message must reach the storage
    /// writer before the session can send it, or the session's own changes to it (sent,
    /// acknowledged: removed) could reach the writer first, and the message stay in the store
    /// to be sent again after a restart.
    fn dispatch(&mut self) {
        for slot in mem::take(&mut self.touched).drain(..) {
            if let Some(client) = self.client_mut(slot) {
                let batch = mem::take(&mut client.pending);
                let seqs = client.take_pending_seqs();
                client.deliver(batch, seqs);
            }
        }
    }

    /// Ends the routing of a publisher's batch (or, with `None`, of part of one): what it
    /// changed goes to the store, and the publisher's answer goes out now or, when the batch
    /// changed durable state, once that is committed (see `durable`).
    fn finish(&mut self, answer: Option<(Addr<Session>, Routed)>, ctx: &mut Context<Self>) {
        let answer = match &mut self.durable {
            None => durable::Answer::Now(answer),
            Some(durable) => durable.finish_batch(answer),
        };
        match answer {
            durable::Answer::Now(answer) => {
                if let Some((publisher, routed)) = answer {
                    publisher.do_send(routed);
                }
            }
            durable::Answer::AfterCommit(commit) => {
                ctx.spawn(commit.into_actor(self).map(|result, act, _| {
                    let answer = act.durable.as_mut().and_then(|durable| durable.committed(result));
                    if let Some((publisher, routed)) = answer {
                        publisher.do_send(routed);
                    }
                }));
            }
        }
    }

    /// Routes the batches parked by admission control as far as the subscribers' room now
    /// allows, oldest first; a publisher's batch still blocked keeps its later ones waiting.
    fn retry_parked(&mut self, ctx: &mut Context<Self>) {
        if self.parked.is_empty() {
            return;
        }
        let mut answers = Vec::new();
        for parked in self.parked.take_all() {
            if self.parked.has(&parked.from) {
                self.parked.push(parked);
                continue;
            }
            let ParkedRoute { from, acks, rest } = parked;
            match self.route_batch(rest, Some(&from)) {
                Some(rest) => self.parked.push(ParkedRoute { from, acks, rest }),
                None => answers.push((from, Routed { acks, stored: true })),
            }
        }
        if answers.is_empty() {
            // Parts of batches were routed, and stay parked for the rest.
            self.finish(None, ctx);
        }
        for answer in answers {
            self.finish(Some(answer), ctx);
        }
        self.dispatch();
        self.arm_stall_timer(ctx);
    }

    /// While batches are parked, retries them every `STALL_GRACE`: a subscriber that stopped
    /// draining sends no report that would.
    fn arm_stall_timer(&mut self, ctx: &mut Context<Self>) {
        if self.parked.is_empty() || self.stall_timer.is_some() {
            return;
        }
        self.stall_timer = Some(ctx.run_later(admission::STALL_GRACE, |act, ctx| {
            act.stall_timer = None;
            act.retry_parked(ctx);
        }));
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        debug!("router started");
    }
}

/// A session actor claims a client identifier once its CONNECT is accepted.
#[derive(Message)]
#[rtype(result = "Registered")]
pub struct Register {
    pub client_id: ByteString,
    pub clean_session: bool,
    pub session: Addr<Session>,
}

pub struct Registered {
    pub generation: u64,
    /// Whether the server held state for this client id [MQTT-3.2.2-2, MQTT-3.2.2-3].
    pub session_present: bool,
    /// The in-flight and queued messages of the resumed session, taken from its previous actor.
    pub resumed: Option<SessionState>,
}

impl Handler<Register> for Router {
    type Result = ResponseActFuture<Self, Registered>;

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) -> Self::Result {
        if self.stopping {
            // A CONNECT that got here after the shutdown began: answered, then closed like the rest.
            msg.session.do_send(Drain);
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let Some(&slot) = self.by_id.get(&msg.client_id) else {
            let client = Client::new(msg.client_id, msg.session, generation, msg.clean_session);
            if let Some(durable) = self.durable.as_mut().filter(|_| !msg.clean_session) {
                durable.save(vec![client.record(None)]);
            }
            self.insert_client(client);
            return Box::pin(fut::ready(Registered { generation, session_present: false, resumed: None }));
        };
        let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Box::pin(fut::ready(Registered { generation, session_present: false, resumed: None }));
        };
        let previous = mem::replace(&mut client.session, msg.session);
        client.generation = generation;
        client.backlog.restart();
        // The old state survives only if both the old and the new connection asked for a
        // persistent session [MQTT-3.1.2-4, MQTT-3.1.2-6].
        let resume = !msg.clean_session && !client.clean_session;
        let was_persistent = !client.clean_session;
        client.clean_session = msg.clean_session;
        info!(client_id = %client.id, resume, "client id already known: taking over its session");
        // Publishers that waited for the old connection try the new one, empty so far.
        self.retry_parked(ctx);
        let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Box::pin(fut::ready(Registered { generation, session_present: false, resumed: None }));
        };
        if let Some(durable) = self.durable.as_mut() {
            if was_persistent && !resume {
                // The old session may store a few more changes before it gets its TakeOver:
                // the writer drops them (it retires the fence when it stops).
                let superseded_by = Some(generation);
                durable.save(vec![Change::SessionRemoved { client_id: client.id.clone(), superseded_by }]);
            }
            if resume {
                durable.save(vec![client.record(None)]);
            }
        }
        if !resume {
            self.clear_subscriptions(slot);
            // A new persistent session starts empty, in the store too.
            let client = self.clients.get(slot as usize).and_then(Option::as_ref);
            if let (Some(durable), Some(client)) = (self.durable.as_mut(), client) {
                if !msg.clean_session {
                    durable.save(vec![client.record(None)]);
                }
            }
            previous.do_send(TakeOver { keep_state: false });
            return Box::pin(fut::ready(Registered { generation, session_present: false, resumed: None }));
        }
        Box::pin(previous.send(TakeOver { keep_state: true }).into_actor(self).map(move |answer, _, _| Registered {
            generation,
            session_present: true,
            resumed: answer.ok().flatten(),
        }))
    }
}

/// A session's connection ended for good (clean session, or never registered state worth
/// keeping): forget the client and its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub client_id: ByteString,
    pub generation: u64,
}

impl Handler<Unregister> for Router {
    type Result = ();

    fn handle(&mut self, msg: Unregister, ctx: &mut Self::Context) {
        if let Some(slot) = self.current_slot(&msg.client_id, msg.generation) {
            self.remove_client(slot, ctx);
        }
    }
}

/// A persistent session lost its connection: it holds no publisher back while its client is
/// away, and its record says since when (for `session_expiry_interval` after a restart).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Parked {
    pub client_id: ByteString,
    pub generation: u64,
}

impl Handler<Parked> for Router {
    type Result = ();

    fn handle(&mut self, msg: Parked, ctx: &mut Self::Context) {
        let Some(slot) = self.current_slot(&msg.client_id, msg.generation) else { return };
        let durable = self.durable.as_mut();
        let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        client.backlog.offline = true;
        if let Some(durable) = durable {
            durable.save(vec![client.record(Some(crate::session::unix_now()))]);
        }
        self.retry_parked(ctx);
    }
}

/// A persistent session saved by an earlier run, started without a connection: the router
/// takes it back with its subscriptions, before any client connects.
pub struct RestoredSession {
    pub client_id: ByteString,
    pub subscriptions: Vec<(ByteString, QoS)>,
    pub last_seq: u64,
    pub generation: u64,
    pub session: Addr<Session>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore(pub Vec<RestoredSession>);

impl Handler<Restore> for Router {
    type Result = ();

    fn handle(&mut self, Restore(sessions): Restore, _ctx: &mut Self::Context) {
        for restored in sessions {
            self.next_generation = self.next_generation.max(restored.generation);
            let mut client = Client::new(restored.client_id, restored.session, restored.generation, false);
            client.stored = Some(Box::new(StoredClient { pending_seqs: Vec::new(), last_seq: restored.last_seq }));
            client.backlog.offline = true;
            let slot = self.insert_client(client);
            for (filter, qos) in restored.subscriptions {
                self.tree.insert(&filter, slot, qos);
                if let Some(client) = self.client_mut(slot) {
                    client.filters.insert(filter, qos);
                }
            }
        }
        self.stats.set_subscriptions(self.tree.len());
    }
}

/// A batch of application messages published by one client (or its will), in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    /// The publishing session, answered with `Routed` once the batch is routed; None for a
    /// will or a closing connection.
    pub from: Option<Addr<Session>>,
    /// Acknowledgements the publisher holds until then, echoed back in `Routed`.
    pub acks: u32,
    pub batch: Vec<Publish>,
}

impl Handler<Route> for Router {
    type Result = ();

    fn handle(&mut self, Route { from, acks, batch }: Route, ctx: &mut Self::Context) {
        if self.stopping {
            shutdown::refuse(from);
            return;
        }
        if let Some(publisher) = from.as_ref().filter(|publisher| self.parked.has(publisher)) {
            // Behind its own parked batch, in order.
            self.parked.push(ParkedRoute { from: publisher.clone(), acks, rest: batch.into_iter() });
            return;
        }
        let rest = self.route_batch(batch.into_iter(), from.as_ref());
        match (from, rest) {
            (Some(from), Some(rest)) => {
                self.stats.publisher_paused();
                self.parked.push(ParkedRoute { from, acks, rest });
                // What was routed of it is stored now; the answer waits for the rest.
                self.finish(None, ctx);
                self.arm_stall_timer(ctx);
            }
            (from, _) => self.finish(from.map(|publisher| (publisher, Routed { acks, stored: true })), ctx),
        }
        self.dispatch();
    }
}

/// A session's report on its backlog (see `admission`), sent every `Marks::step` messages it
/// writes or drops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drained {
    pub client_id: ByteString,
    pub generation: u64,
    pub progress: Progress,
}

impl Handler<Drained> for Router {
    type Result = ();

    fn handle(&mut self, msg: Drained, ctx: &mut Self::Context) {
        let Some(slot) = self.current_slot(&msg.client_id, msg.generation) else { return };
        let (marks, clock) = (self.marks, &self.clock);
        let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        if client.backlog.report(msg.progress, marks, clock) {
            self.retry_parked(ctx);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub client_id: ByteString,
    pub generation: u64,
    pub pkid: u16,
    pub filters: Vec<SubscribeFilter>,
    /// Filters the topic-check plugins refused, by position (empty: none): answered 0x80.
    pub refused: Vec<bool>,
}

impl Handler<Subscribe> for Router {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        let Some(slot) = self.current_slot(&msg.client_id, msg.generation) else {
            debug!(client_id = %msg.client_id, "SUBSCRIBE from a replaced session ignored");
            return;
        };
        let limit = self.settings.max_subscriptions_per_client;
        // Logged and counted by the session, which knows the client's address, once per packet.
        let mut over_limit = 0u32;
        let mut codes = Vec::with_capacity(msg.filters.len());
        let mut retained = Vec::new();
        let events = self.plugins.events().interests().subscriptions;
        for (index, SubscribeFilter { filter, qos }) in msg.filters.into_iter().enumerate() {
            let Some(client) = self.client_mut(slot) else { return };
            if msg.refused.get(index) == Some(&true) {
                codes.push(SubscribeReturnCode::Failure);
                continue;
            }
            let known = client.filters.contains_key(&filter);
            if !known && limit != 0 && client.filters.len() >= limit {
                over_limit += 1;
                codes.push(SubscribeReturnCode::Failure);
                continue;
            }
            client.filters.insert(filter.clone(), qos);
            if events {
                let client_id = client.id.to_string();
                self.plugins.emit(Event::Subscribed { client_id, filter: filter.to_string(), qos: qos.into() });
            }
            // A new subscription to an existing filter replaces it [MQTT-3.8.4-3].
            self.tree.insert(&filter, slot, qos);
            self.stats.set_subscriptions(self.tree.len());
            codes.push(SubscribeReturnCode::Success(qos));
            // Retained messages go to every matching new subscription, re-subscriptions
            // included, with RETAIN set [MQTT-3.3.1-6, MQTT-3.3.1-8].
            let first = retained.len();
            self.retained.matching(&filter, &mut retained);
            for message in &mut retained[first..] {
                message.qos = message.qos.min(qos);
                message.retain = true;
                message.dup = false;
                message.pkid = 0;
            }
        }
        let durable = self.durable.as_mut();
        let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        let mut seqs = Vec::new();
        if let Some(durable) = durable.filter(|_| !client.clean_session) {
            for message in &retained {
                client.keep(Some(&mut *durable), message);
            }
            seqs = client.take_pending_seqs();
            let mut changes = vec![client.record(None)];
            changes.append(&mut durable.take_recorded());
            durable.save(changes);
        }
        // Both travel through the session's mailbox, in order: SUBACK first, then the
        // retained messages, then whatever is routed to the new subscription afterwards.
        client.session.do_send(SubscribeDone { pkid: msg.pkid, return_codes: codes, over_limit });
        if !retained.is_empty() {
            client.deliver(retained, seqs);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub client_id: ByteString,
    pub generation: u64,
    pub pkid: u16,
    pub filters: Vec<ByteString>,
}

impl Handler<Unsubscribe> for Router {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Self::Context) {
        let Some(slot) = self.current_slot(&msg.client_id, msg.generation) else { return };
        for filter in &msg.filters {
            let events = self.plugins.events().interests().subscriptions;
            let Some(client) = self.client_mut(slot) else { return };
            if client.filters.remove(filter).is_some() {
                if events {
                    let client_id = client.id.to_string();
                    self.plugins.emit(Event::Unsubscribed { client_id, filter: filter.to_string() });
                }
                self.tree.remove(filter, slot);
                self.stats.set_subscriptions(self.tree.len());
            }
        }
        // UNSUBACK is due even when no filter matched a subscription [MQTT-3.10.4-5].
        let durable = self.durable.as_mut();
        if let Some(client) = self.clients.get_mut(slot as usize).and_then(Option::as_mut) {
            if let Some(durable) = durable.filter(|_| !client.clean_session) {
                durable.save(vec![client.record(None)]);
            }
            client.session.do_send(UnsubscribeDone { pkid: msg.pkid });
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every connection pays for one `Client` here (boxed) and one `Session` actor (in a tokio
    /// task cell, whose size steps decide what a few extra bytes really cost): memory per idle
    /// connection is a target of its own (issue 4), so growth must be a decision.
    #[test]
    fn per_connection_structs_stay_small() {
        assert!(std::mem::size_of::<super::Client>() <= 168, "{}", std::mem::size_of::<super::Client>());
        let session = std::mem::size_of::<crate::session::Session>();
        assert!(session <= 320, "{session}");
    }
}
