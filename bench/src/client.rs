//! The bench's own minimal MQTT 3.1.1 client: one `TcpStream` with `TCP_NODELAY`, a `BytesMut`
//! read buffer framed with [`frame_len`] and decoded with [`Packet::read`], and writes that the
//! caller batches (encode many packets, one `write_all`).

use std::net::SocketAddr;
use std::time::Duration;

use amqtt_protocol::{
    frame_len, ByteString, ConnectReturnCode, Packet, QoS, Subscribe, SubscribeFilter, SubscribeReturnCode,
    PROTOCOL_LEVEL, PROTOCOL_NAME,
};
use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet the bench accepts from a broker.
pub const MAX_PACKET_SIZE: usize = 1024 * 1024;

/// How long the handshake steps (TCP connect + CONNACK, SUBACK) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Keep-alive the bench's clients announce: long enough never to need a PINGREQ during a run
/// (rumqttd refuses 0).
pub const KEEP_ALIVE_SECS: u16 = 600;

#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
}

impl Conn {
    /// TCP connect, CONNECT (clean session), and wait for a CONNACK accepting it.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> anyhow::Result<Conn> {
        Self::connect_with(addr, client_id, true).await
    }

    /// The same with the clean-session flag given: `false` asks for a persistent session, which
    /// the broker keeps (subscriptions, queued QoS 1/2 messages) while the client is away.
    pub async fn connect_with(addr: SocketAddr, client_id: &str, clean_session: bool) -> anyhow::Result<Conn> {
        Ok(Self::connect_session(addr, client_id, clean_session).await?.0)
    }

    /// The same, also returning the CONNACK's session-present flag: whether the broker resumed
    /// a session it kept for this client id.
    pub async fn connect_session(
        addr: SocketAddr,
        client_id: &str,
        clean_session: bool,
    ) -> anyhow::Result<(Conn, bool)> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::connect_inner(addr, client_id, clean_session))
            .await
            .with_context(|| format!("{client_id}: no CONNACK within {HANDSHAKE_TIMEOUT:?}"))?
    }

    async fn connect_inner(addr: SocketAddr, client_id: &str, clean_session: bool) -> anyhow::Result<(Conn, bool)> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        // Small at first: the idle-connections scenario holds thousands of these.
        let mut conn = Conn { stream, rbuf: BytesMut::with_capacity(64) };
        let connect = Packet::Connect(amqtt_protocol::Connect {
            protocol_name: ByteString::from_static(PROTOCOL_NAME),
            protocol_level: PROTOCOL_LEVEL,
            clean_session,
            keep_alive: KEEP_ALIVE_SECS,
            client_id: ByteString::from(client_id.to_owned()),
            will: None,
            username: None,
            password: None,
        });
        conn.send(&connect).await?;
        match conn.read_packet().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Accepted => Ok((conn, ack.session_present)),
            Packet::ConnAck(ack) => bail!("{client_id}: connection refused: {:?}", ack.code),
            other => bail!("{client_id}: expected CONNACK, got {other:?}"),
        }
    }

    /// SUBSCRIBE to one filter and wait for its SUBACK; fails if the broker refuses it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let subscribe = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter { filter: ByteString::from(filter.to_owned()), qos }],
        });
        self.send(&subscribe).await?;
        let packet = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.read_packet())
            .await
            .with_context(|| format!("no SUBACK for {filter} within {HANDSHAKE_TIMEOUT:?}"))??;
        match packet {
            Packet::SubAck(ack) => match ack.return_codes.first() {
                Some(SubscribeReturnCode::Success(_)) => Ok(()),
                other => bail!("subscription to {filter} refused: {other:?}"),
            },
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut buf = BytesMut::new();
        packet.write(&mut buf)?;
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// The next whole frame already in the read buffer, if any.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Bytes>> {
        Ok(frame_len(&self.rbuf, MAX_PACKET_SIZE)?.map(|len| self.rbuf.split_to(len).freeze()))
    }

    /// Reads more bytes into the read buffer; fails on end of stream.
    pub async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(4096);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            bail!("connection closed by the broker");
        }
        Ok(n)
    }

    /// Reads whatever has arrived into the read buffer, without waiting; fails on end of stream.
    pub fn fill_available(&mut self) -> anyhow::Result<()> {
        loop {
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => bail!("connection closed by the broker"),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads until one whole packet is buffered, and decodes it.
    pub async fn read_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(Packet::read(frame)?);
            }
            self.fill().await?;
        }
    }

    /// Closes the connection without DISCONNECT, as a crashing client or a lost network would:
    /// with `reset`, an RST (SO_LINGER 0: unsent data discarded), else an ordinary FIN.
    pub fn abort(self, reset: bool) {
        if reset {
            let _ = self.stream.set_zero_linger();
        }
    }

    /// DISCONNECT, then close (errors ignored: the broker may be gone already).
    pub async fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }
}
