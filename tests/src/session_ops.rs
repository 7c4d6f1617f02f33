//! The op model of the `session` fuzz target (fuzz/fuzz_targets/session.rs, nightly) and of
//! tests/tests/session_fuzz.rs (stable), shared so both drive a real broker the same way.
//!
//! An input's bytes are read as a list of [`Op`]s (a hand-written `arbitrary`: every byte string
//! is some list of ops, so libFuzzer's mutations and proptest's shrinking both work on plain
//! bytes) and played by a [`Driver`] over real TCP connections in two slots: connects of every
//! kind, publishes and subscriptions over a small topic alphabet with wildcards and `$SYS`,
//! acknowledgements with random packet ids, a second connection taking over a client id, raw
//! frames and garbage. Each input ends with a PINGREQ on every open connection: the broker must
//! answer it or close the connection, and must not send a malformed or client-only packet.
//! Panics of broker threads abort the process ([`abort_on_broker_panic`]).
//!
//! Connections outlive an input when the driver does (the fuzz target keeps one), so most
//! inputs cost no TCP connect or CONNECT: that is what makes millions of inputs feasible.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use amqtt_broker::{Broker, Config, RunningBroker};
use amqtt_protocol::{
    frame_len, ByteString, Connect, LastWill, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Subscribe,
    SubscribeFilter, Unsubscribe,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the broker may take to answer the final PINGREQ (or close) before the input counts
/// as a hang. The longest legitimate wait is a publisher held back for 500 ms.
pub const HANG: Duration = Duration::from_secs(5);

/// New connections one input may open (explicitly or to replace one the broker closed); ops
/// that would need more are skipped. Bounds the cost of an input, since a connection costs more
/// than everything else in it.
pub const CONNECTS_PER_INPUT: usize = 2;

/// The broker's `max-packet-size`; [`Op`]s can exceed it.
pub const MAX_PACKET_SIZE: usize = 4096;

/// Small limits, so that inputs reach them: a full inflight window, a full queue, too many
/// subscriptions. Persistence off; `$SYS` published every second.
pub const BROKER_YAML: &str = "\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:0
max-packet-size: 4096
max-inflight-messages: 4
max-queued-messages: 16
max-subscriptions-per-client: 6
sys_interval: 1
";

/// Topic names and filters: valid names first, then filters with wildcards (invalid as names),
/// then strings invalid as both. Choices lean to the valid ones, since an invalid topic closes
/// the connection and a new one costs more than the rest of an input.
pub const TOPICS: [&str; 20] = [
    "a",
    "a/b",
    "a/b/c",
    "b",
    "/",
    "a//b",
    "é/😀",
    "a/b/c/d/e/f/g/h",
    "$SYS/x",
    "$SYS/broker/uptime",
    "a/+",
    "+/b",
    "#",
    "a/#",
    "+",
    "$SYS/#",
    "+/+/#",
    "",
    "a/#/b",
    "a+",
];
const VALID_NAMES: usize = 10;
const VALID_FILTERS: usize = 17;

/// Client ids of CONNECTs: shared by both slots, so connects take sessions over; "" is refused
/// unless the session is clean.
const CLIENT_IDS: [&str; 4] = ["c0", "c1", "c2", ""];

/// The client id of each slot's plain CONNECT (when an op needs a connection the slot lacks):
/// a slot's own, so that replacing a connection the broker closed takes nothing over (two slots
/// with one id would take each other over at every reconnection).
const SLOT_IDS: [&str; 2] = ["s0", "s1"];

/// One step of an input. `slot` is 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new TCP connection in `slot` (the old one, if any, dropped without DISCONNECT), then
    /// this CONNECT.
    Connect { slot: usize, connect: Box<Connect> },
    /// A new connection in `slot` with the client id of the other slot's last CONNECT.
    Takeover { slot: usize, clean_session: bool },
    /// A second CONNECT on the open connection (a protocol violation).
    ConnectAgain { slot: usize },
    /// Any packet a client may send, well-formed but not necessarily valid (a zero packet id,
    /// a wildcard topic name, a packet larger than the maximum).
    Send { slot: usize, packet: Packet },
    /// Acknowledges what the broker delivered to `slot` so far (PUBACK, PUBREC, PUBCOMP), as a
    /// well-behaved client would.
    AckReceived { slot: usize },
    /// Closes the connection without DISCONNECT (its will, if any, is published).
    Drop { slot: usize },
    /// A complete frame with any first byte and body.
    RawFrame { slot: usize, bytes: Vec<u8> },
    /// Any bytes, then end of stream: the broker must close the connection. `bare`: on a new
    /// connection that has not sent CONNECT.
    Garbage { slot: usize, bytes: Vec<u8>, bare: bool },
}

impl Op {
    /// The ops an input's bytes stand for (at most 64).
    pub fn parse_all(data: &[u8]) -> Vec<Op> {
        let mut input = Input(data);
        let mut ops = Vec::new();
        while !input.0.is_empty() && ops.len() < 64 {
            ops.push(Op::parse(&mut input));
        }
        ops
    }

    fn parse(input: &mut Input<'_>) -> Op {
        let head = input.byte();
        let slot = usize::from(head >> 7);
        // Ops that close or open a connection are rare (3 in 128, then chosen by the next byte):
        // a new connection costs more than all the rest of an input, and inputs must be cheap
        // enough to run by the million.
        match head & 0x7f {
            0..=51 => Op::Send { slot, packet: Packet::Publish(input.publish()) },
            52..=73 => {
                let pkid = input.pkid();
                let filters = (0..=input.byte() % 4)
                    .map(|_| SubscribeFilter { filter: input.topic_filter(), qos: input.qos() })
                    .collect();
                Op::Send { slot, packet: Packet::Subscribe(Subscribe { pkid, filters }) }
            }
            74..=85 => {
                let pkid = input.pkid();
                let filters = (0..=input.byte() % 3).map(|_| input.topic_filter()).collect();
                Op::Send { slot, packet: Packet::Unsubscribe(Unsubscribe { pkid, filters }) }
            }
            86..=89 => Op::Send { slot, packet: Packet::PubAck(PubAck { pkid: input.pkid() }) },
            90..=93 => Op::Send { slot, packet: Packet::PubRec(PubRec { pkid: input.pkid() }) },
            94..=97 => Op::Send { slot, packet: Packet::PubRel(PubRel { pkid: input.pkid() }) },
            98..=101 => Op::Send { slot, packet: Packet::PubComp(PubComp { pkid: input.pkid() }) },
            102..=113 => Op::AckReceived { slot },
            114..=124 => Op::Send { slot, packet: Packet::PingReq },
            _ => match input.byte() % 8 {
                0 => Op::Connect { slot, connect: Box::new(input.connect()) },
                1 => Op::Takeover { slot, clean_session: input.byte() & 1 == 0 },
                2 => Op::ConnectAgain { slot },
                3 => Op::Send { slot, packet: Packet::Disconnect },
                4 => Op::Drop { slot },
                5 | 6 => {
                    let first = input.first_byte();
                    let body = input.bytes();
                    let mut bytes = vec![first];
                    put_remaining_length(&mut bytes, body.len());
                    bytes.extend_from_slice(body);
                    Op::RawFrame { slot, bytes }
                }
                _ => {
                    let bare = input.byte() & 1 == 0;
                    Op::Garbage { slot, bytes: input.bytes().to_vec(), bare }
                }
            },
        }
    }
}

/// The unread part of an input; reads past its end give zeros, so any input parses.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&byte, rest)) => {
                self.0 = rest;
                byte
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// The first byte of a raw frame: half the time a packet type with the flags it requires
    /// (any flags for PUBLISH), so the packet reader gets past the fixed header.
    fn first_byte(&mut self) -> u8 {
        match self.byte() {
            byte @ 0..=0x7f => {
                let packet_type = 1 + byte % 14;
                let flags = match packet_type {
                    3 => (byte >> 4) & 0b0111,
                    6 | 8 | 10 => 0b0010,
                    _ => 0,
                };
                packet_type << 4 | flags
            }
            _ => self.byte(),
        }
    }

    /// Up to 64 bytes, the count from the input.
    fn bytes(&mut self) -> &[u8] {
        let len = usize::from(self.byte() % 65).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        bytes
    }

    /// Mostly ids 1 to 8, so acknowledgements meet the flows in flight; sometimes the invalid
    /// 0 or any id.
    fn pkid(&mut self) -> u16 {
        match self.byte() {
            byte @ 0..=0xbf => 1 + u16::from(byte & 7),
            0xc0 => 0,
            _ => self.u16(),
        }
    }

    fn qos(&mut self) -> QoS {
        match self.byte() % 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    /// Mostly a valid topic name.
    fn topic_name(&mut self) -> ByteString {
        self.topic_among(VALID_NAMES)
    }

    /// Mostly a valid topic filter.
    fn topic_filter(&mut self) -> ByteString {
        self.topic_among(VALID_FILTERS)
    }

    fn topic_among(&mut self, valid: usize) -> ByteString {
        let byte = usize::from(self.byte());
        let among = if byte < 0xe0 { valid } else { TOPICS.len() };
        ByteString::from_static(TOPICS[byte % among])
    }

    fn publish(&mut self) -> Publish {
        let flags = self.byte();
        let qos = self.qos();
        let topic = self.topic_name();
        let pkid = if qos == QoS::AtMostOnce && flags & 1 == 0 { 0 } else { self.pkid() };
        let payload = match self.byte() {
            // Over the maximum packet size: the broker must refuse it from its header.
            255 => Bytes::from(vec![b'x'; MAX_PACKET_SIZE]),
            len => Bytes::from(vec![b'p'; usize::from(len)]),
        };
        // DUP on a QoS 0 message is malformed [MQTT-3.3.1-2]: rare, it closes the connection.
        let dup = flags & 2 != 0 && (qos != QoS::AtMostOnce || flags & 0xf0 == 0xf0);
        Publish { dup, qos, retain: flags & 4 != 0, topic, pkid, payload }
    }

    fn connect(&mut self) -> Connect {
        let flags = self.byte();
        let (protocol_name, protocol_level) = match flags >> 6 {
            0 | 1 => ("MQTT", 4),
            2 => ("MQIsdp", 3),
            _ => ("MQTT", self.byte()),
        };
        let will = (flags & 8 != 0).then(|| LastWill {
            topic: self.topic_name(),
            message: Bytes::from_static(b"will"),
            qos: self.qos(),
            retain: flags & 1 != 0,
        });
        Connect {
            protocol_name: ByteString::from_static(protocol_name),
            protocol_level,
            clean_session: flags & 4 != 0,
            keep_alive: u16::from(self.byte()),
            client_id: ByteString::from_static(CLIENT_IDS[usize::from(flags & 3)]),
            will,
            username: (flags & 16 != 0).then(|| ByteString::from_static("user")),
            // Without a user name: refused [MQTT-3.1.2-22].
            password: (flags & 32 != 0).then(|| Bytes::from_static(b"password")),
        }
    }
}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A broker for fuzzing: [`BROKER_YAML`], one worker thread.
pub fn start_broker() -> RunningBroker {
    let (config, warnings) = Config::from_yaml_str(BROKER_YAML, None).expect("the fuzzing configuration loads");
    assert!(warnings.is_empty(), "warnings for the fuzzing configuration: {warnings:?}");
    Broker::new(config).workers(1).start().expect("the fuzzing broker starts")
}

thread_local! {
    static DRIVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Makes a panic on any thread but this one (the broker's threads) abort the process, after the
/// usual message: actix would otherwise only lose the actor, and the fuzzer or test would never
/// know. Panics on this thread (a failed check) unwind as usual, so proptest can shrink them.
pub fn abort_on_broker_panic() {
    DRIVER_THREAD.with(|driver| driver.set(true));
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if !DRIVER_THREAD.with(Cell::get) {
            std::process::abort();
        }
    }));
}

/// What the broker did wrong.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no answer to PINGREQ and no close within {HANG:?} (slot {slot})")]
    Hang { slot: usize },
    #[error("the broker sent a malformed packet to slot {slot}: {error}")]
    Malformed { slot: usize, error: amqtt_protocol::DecodeError },
    #[error("the broker sent {packet:?} to slot {slot}, a packet only clients send")]
    ClientPacket { slot: usize, packet: Box<Packet> },
    #[error("the broker refused a plain CONNECT after the input: {0}")]
    Refused(String),
}

/// One TCP connection of a slot.
struct Conn {
    stream: TcpStream,
    /// Packets to write, sent in one write when another slot is used or the input ends.
    out: BytesMut,
    inbuf: BytesMut,
    /// The acknowledgements owed for what the broker delivered ([`Op::AckReceived`]).
    acks: Vec<Packet>,
    /// Garbage was sent and the write side shut: only the broker's close is awaited.
    shut: bool,
}

/// How the last input ended, for statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Connections the broker answered PINGREQ on.
    pub answered: usize,
    /// Connections the broker closed.
    pub closed: usize,
    /// New TCP connections the input made.
    pub connects: usize,
}

/// Plays inputs against a broker over two connection slots that persist between inputs.
pub struct Driver {
    addr: SocketAddr,
    slots: [Option<Conn>; 2],
    client_ids: [ByteString; 2],
    /// New connections this input may still open.
    connects_left: usize,
    outcome: Outcome,
}

impl Driver {
    pub fn new(addr: SocketAddr) -> Driver {
        Driver {
            addr,
            slots: [None, None],
            client_ids: SLOT_IDS.map(ByteString::from_static),
            connects_left: 0,
            outcome: Outcome::default(),
        }
    }

    /// Plays `ops`, then checks every open connection still answers (or is closed by the
    /// broker), and that the broker accepts a CONNECT if none is left open.
    pub async fn run(&mut self, ops: &[Op]) -> Result<Outcome, Failure> {
        self.outcome = Outcome::default();
        self.connects_left = CONNECTS_PER_INPUT;
        let mut current = 0;
        for op in ops {
            let slot = op.slot();
            if slot != current {
                self.flush(current).await;
                current = slot;
            }
            self.play(op).await;
        }
        // What is still buffered goes out with the PINGREQ, in one write.
        self.finish().await?;
        if self.slots.iter().all(Option::is_none) {
            // Nothing left open: the broker must still take a connection.
            self.connects_left = 1;
            self.conn(0).await;
            self.finish().await?;
            if self.slots[0].is_none() {
                return Err(Failure::Refused("the connection was closed".into()));
            }
        }
        Ok(self.outcome)
    }

    async fn play(&mut self, op: &Op) {
        match op {
            Op::Connect { slot, connect } => {
                if self.open(*slot, Some(Packet::Connect((**connect).clone()))).await {
                    self.client_ids[*slot] = connect.client_id.clone();
                }
            }
            Op::Takeover { slot, clean_session } => {
                let client_id = self.client_ids[1 - slot].clone();
                let connect = Connect { clean_session: *clean_session, ..plain_connect(client_id.clone()) };
                if self.open(*slot, Some(Packet::Connect(connect))).await {
                    self.client_ids[*slot] = client_id;
                }
            }
            Op::ConnectAgain { slot } => {
                let connect = plain_connect(self.client_ids[*slot].clone());
                self.send(*slot, &Packet::Connect(connect)).await;
            }
            Op::Send { slot, packet } => self.send(*slot, packet).await,
            Op::AckReceived { slot } => {
                if let Some(conn) = self.conn(*slot).await {
                    for ack in std::mem::take(&mut conn.acks) {
                        let _ = ack.write(&mut conn.out);
                    }
                }
            }
            Op::Drop { slot } => {
                self.flush_all().await;
                self.slots[*slot] = None;
            }
            Op::RawFrame { slot, bytes } => {
                if let Some(conn) = self.conn(*slot).await {
                    conn.out.extend_from_slice(bytes);
                }
            }
            Op::Garbage { slot, bytes, bare } => {
                if *bare && !self.open(*slot, None).await {
                    return;
                }
                if let Some(conn) = self.conn(*slot).await {
                    conn.out.extend_from_slice(bytes);
                    conn.shut = true;
                    self.flush(*slot).await;
                }
            }
        }
    }

    /// The open connection of `slot`, connected with a plain CONNECT first if there is none;
    /// None when that would exceed [`CONNECTS_PER_INPUT`].
    async fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        if self.slots[slot].as_ref().is_none_or(|conn| conn.shut) {
            let client_id = ByteString::from_static(SLOT_IDS[slot]);
            if !self.open(slot, Some(Packet::Connect(plain_connect(client_id.clone())))).await {
                return None;
            }
            self.client_ids[slot] = client_id;
        }
        self.slots[slot].as_mut()
    }

    async fn send(&mut self, slot: usize, packet: &Packet) {
        if let Some(conn) = self.conn(slot).await {
            let _ = packet.write(&mut conn.out);
        }
    }

    /// A new connection in `slot` that starts with `connect` (nothing: a bare connection),
    /// replacing the slot's connection; false, and nothing done, when the input has opened
    /// [`CONNECTS_PER_INPUT`] already.
    async fn open(&mut self, slot: usize, connect: Option<Packet>) -> bool {
        if self.connects_left == 0 {
            return false;
        }
        self.connects_left -= 1;
        // Everything sent before reaches the broker before this connection exists.
        self.flush_all().await;
        self.slots[slot] = None;
        let stream = TcpStream::connect(self.addr).await.expect("the broker accepts TCP connections");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        self.outcome.connects += 1;
        let mut conn = Conn { stream, out: BytesMut::new(), inbuf: BytesMut::new(), acks: Vec::new(), shut: false };
        if let Some(connect) = connect {
            let _ = connect.write(&mut conn.out);
        }
        self.slots[slot] = Some(conn);
        true
    }

    /// Writes what `slot` has buffered; a connection the broker closed is forgotten.
    async fn flush(&mut self, slot: usize) {
        let Some(conn) = &mut self.slots[slot] else { return };
        if !conn.out.is_empty() {
            let written = conn.stream.write_all(&conn.out).await;
            conn.out.clear();
            if written.is_err() {
                self.slots[slot] = None;
                self.outcome.closed += 1;
                return;
            }
        }
        if conn.shut {
            let _ = conn.stream.shutdown().await;
        }
    }

    async fn flush_all(&mut self) {
        self.flush(0).await;
        self.flush(1).await;
    }

    /// PINGREQ on each open connection, then each must answer it or be closed by the broker;
    /// connections whose write side is shut must be closed.
    async fn finish(&mut self) -> Result<(), Failure> {
        for slot in 0..2 {
            if let Some(conn) = self.slots[slot].as_mut().filter(|conn| !conn.shut) {
                let _ = Packet::PingReq.write(&mut conn.out);
            }
            self.flush(slot).await;
        }
        for slot in 0..2 {
            let Some(conn) = &mut self.slots[slot] else { continue };
            match tokio::time::timeout(HANG, read_until_pingresp(conn, slot)).await {
                Err(_) => return Err(Failure::Hang { slot }),
                Ok(Err(failure)) => return Err(failure),
                Ok(Ok(true)) => self.outcome.answered += 1,
                Ok(Ok(false)) => {
                    self.slots[slot] = None;
                    self.outcome.closed += 1;
                }
            }
        }
        Ok(())
    }
}

impl Op {
    fn slot(&self) -> usize {
        match self {
            Op::Connect { slot, .. }
            | Op::Takeover { slot, .. }
            | Op::ConnectAgain { slot }
            | Op::Send { slot, .. }
            | Op::AckReceived { slot }
            | Op::Drop { slot }
            | Op::RawFrame { slot, .. }
            | Op::Garbage { slot, .. } => *slot,
        }
    }
}

fn plain_connect(client_id: ByteString) -> Connect {
    Connect {
        protocol_name: ByteString::from_static("MQTT"),
        protocol_level: 4,
        clean_session: true,
        keep_alive: 0,
        client_id,
        will: None,
        username: None,
        password: None,
    }
}

/// Reads what the broker sends on `conn` until a PINGRESP (true) or the end of the connection
/// (false; a shut connection only ends this way), noting the acknowledgements owed on the way.
async fn read_until_pingresp(conn: &mut Conn, slot: usize) -> Result<bool, Failure> {
    loop {
        while let Some(len) = frame_len(&conn.inbuf, usize::MAX).map_err(|error| Failure::Malformed { slot, error })? {
            let frame = conn.inbuf.split_to(len).freeze();
            match Packet::read(frame).map_err(|error| Failure::Malformed { slot, error })? {
                Packet::PingResp if !conn.shut => return Ok(true),
                Packet::Publish(publish) => match publish.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => owe(conn, PubAck { pkid: publish.pkid }.into()),
                    QoS::ExactlyOnce => owe(conn, PubRec { pkid: publish.pkid }.into()),
                },
                Packet::PubRel(PubRel { pkid }) => owe(conn, PubComp { pkid }.into()),
                Packet::ConnAck(_)
                | Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubComp(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp => {}
                packet @ (Packet::Connect(_)
                | Packet::Subscribe(_)
                | Packet::Unsubscribe(_)
                | Packet::PingReq
                | Packet::Disconnect) => return Err(Failure::ClientPacket { slot, packet: Box::new(packet) }),
            }
        }
        conn.inbuf.reserve(4096);
        match conn.stream.read_buf(&mut conn.inbuf).await {
            Ok(0) | Err(_) => return Ok(false),
            Ok(_) => {}
        }
    }
}

/// Keeps at most a window's worth of owed acknowledgements: more would be for messages the
/// broker has not sent yet.
fn owe(conn: &mut Conn, ack: Packet) {
    if conn.acks.len() < 64 {
        conn.acks.push(ack);
    }
}
