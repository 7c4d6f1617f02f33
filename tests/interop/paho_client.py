#!/usr/bin/env python3
"""Eclipse Paho (paho-mqtt 2.x) as an interop peer for tests/tests/interop_paho.rs (and, over
WebSocket with --transport websockets, tests/tests/websocket.rs).

Every mode connects with MQTT 3.1.1, prints what it sees on stdout, one line per event and
flushed at once (the Rust test reads them as they come), and exits 0 on success, 1 when
something was not as expected, 2 on a timeout. Every wait is bounded by --timeout.

Modes:
  roundtrip   a paho subscriber and a paho publisher at --qos: the message must arrive intact
  publish     publish one message (--topic, --payload, --qos, --retain) and wait for its flow
  subscribe   connect (--client-id, --no-clean-session), subscribe unless --no-subscribe,
              print each of --count messages, disconnect
"""

import argparse
import queue
import sys

import paho.mqtt.client as mqtt


class Failure(Exception):
    """Something the broker did was not as expected: exit status 1."""


class Timeout(Exception):
    """Something expected did not happen in time: exit status 2."""


def say(*words):
    print(*words, flush=True)


class Peer:
    """One paho client whose callbacks feed queues, so the script can wait on them."""

    def __init__(self, args, client_id, clean_session=True):
        self.args = args
        self.name = client_id
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            # Acknowledge in the main thread, after the message is handled: a DISCONNECT sent
            # right after the last message then follows its PUBACK/PUBCOMP on the wire.
            manual_ack=True,
            transport=args.transport,
        )
        if args.transport == "websockets":
            self.client.ws_set_options(path=args.ws_path)
        if args.cafile is not None:
            self.client.tls_set(ca_certs=args.cafile)
        if args.username is not None:
            self.client.username_pw_set(args.username, args.password)
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.client.on_message = lambda c, u, message: self.messages.put(message)

    def wait(self, q, what):
        try:
            return q.get(timeout=self.args.timeout)
        except queue.Empty:
            raise Timeout(f"{self.name}: no {what} within {self.args.timeout} s") from None

    def connect(self):
        """Connects and returns the CONNACK's session-present flag."""
        self.client.connect(self.args.host, self.args.port, keepalive=60)
        self.client.loop_start()
        flags, rc = self.wait(self.connacks, "CONNACK")
        if rc.is_failure:
            raise Failure(f"{self.name}: connection refused: {rc}")
        return flags.session_present

    def subscribe(self, topic, qos):
        """Subscribes and returns the granted QoS."""
        result, _ = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise Failure(f"{self.name}: subscribe failed locally: {result}")
        codes = self.wait(self.subacks, "SUBACK")
        if len(codes) != 1 or codes[0].is_failure:
            raise Failure(f"{self.name}: subscription refused: {codes}")
        return codes[0].value

    def publish(self, topic, payload, qos, retain):
        """Publishes and waits until the QoS flow is complete (PUBACK or PUBCOMP received)."""
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout=self.args.timeout)
        if not info.is_published():
            raise Timeout(f"{self.name}: QoS {qos} flow for {topic} not complete")

    def next_message(self):
        message = self.wait(self.messages, "message")
        self.client.ack(message.mid, message.qos)
        return message

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def describe(message):
    payload = message.payload.decode("utf-8", "replace")
    return f"message topic={message.topic} qos={message.qos} retain={int(message.retain)} payload={payload}"


def roundtrip(args):
    topic = args.topic or f"paho/qos{args.qos}"
    payload = args.payload or f"paho round trip at qos {args.qos}"
    subscriber = Peer(args, f"paho-sub-{args.qos}")
    subscriber.connect()
    granted = subscriber.subscribe(topic, args.qos)
    if granted != args.qos:
        raise Failure(f"granted QoS {granted}, asked {args.qos}")
    publisher = Peer(args, f"paho-pub-{args.qos}")
    publisher.connect()
    publisher.publish(topic, payload.encode(), args.qos, False)
    message = subscriber.next_message()
    say(describe(message))
    expected = (topic, payload.encode(), args.qos, False)
    got = (message.topic, message.payload, message.qos, message.retain)
    if got != expected:
        raise Failure(f"received {got}, expected {expected}")
    publisher.close()
    subscriber.close()
    say("ok")


def publish(args):
    publisher = Peer(args, args.client_id or "paho-publisher")
    publisher.connect()
    publisher.publish(args.topic, args.payload.encode(), args.qos, args.retain)
    say(f"published topic={args.topic} qos={args.qos} retain={int(args.retain)}")
    publisher.close()


def subscribe(args):
    subscriber = Peer(args, args.client_id or "paho-subscriber", clean_session=not args.no_clean_session)
    present = subscriber.connect()
    say(f"connected session_present={int(present)}")
    if not args.no_subscribe:
        say(f"subscribed granted={subscriber.subscribe(args.topic, args.qos)}")
    for _ in range(args.count):
        say(describe(subscriber.next_message()))
    subscriber.close()
    say("disconnected")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["roundtrip", "publish", "subscribe"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic")
    parser.add_argument("--payload")
    parser.add_argument("--qos", type=int, choices=[0, 1, 2], default=0)
    parser.add_argument("--retain", action="store_true")
    parser.add_argument("--client-id")
    parser.add_argument("--no-clean-session", action="store_true", help="connect with clean session 0")
    parser.add_argument("--no-subscribe", action="store_true", help="subscribe: only resume the session")
    parser.add_argument("--count", type=int, default=1, help="subscribe: messages to wait for")
    parser.add_argument("--username")
    parser.add_argument("--transport", choices=["tcp", "websockets"], default="tcp")
    parser.add_argument("--ws-path", default="/mqtt", help="websockets: the request path")
    parser.add_argument("--cafile", help="connect with TLS, trusting this CA certificate file")
    parser.add_argument("--password")
    parser.add_argument("--timeout", type=float, default=10.0, help="bound on every wait, seconds")
    args = parser.parse_args()
    if args.mode in ("publish", "subscribe") and args.topic is None and not args.no_subscribe:
        parser.error(f"{args.mode} needs --topic")
    if args.mode == "publish" and args.payload is None:
        parser.error("publish needs --payload")
    try:
        {"roundtrip": roundtrip, "publish": publish, "subscribe": subscribe}[args.mode](args)
    except Failure as failure:
        print(f"paho_client: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Timeout as timeout:
        print(f"paho_client: {timeout}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
