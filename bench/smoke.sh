#!/usr/bin/env bash
# Smoke test of the benchmark harness (for .ci/run; about 60 s): starts our broker (debug build,
# to spare CI a release build) on a free port of 127.0.0.1, runs `amqtt-bench smoke` against it
# (every scenario for 1 s, 500 idle connections), and stops the broker. Fails if a scenario
# delivered nothing or if the pairs scenario lost an acknowledged QoS 1 message. Then two 20-second
# bench/soak.sh runs, `sync: always` and `sync: periodic` (each its own broker, persistence on,
# client kills; half the soak's default rate, for slow CI machines) so that the soak keeps
# working: it fails on a lost acknowledged QoS 1/2 message, a duplicated QoS 2 one, or RSS
# growth, and checks no throughput.
#
# Nothing timing-based is checked: the figures are printed, not compared.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --quiet -p amqtt-broker -p amqtt-bench
bench=target/debug/amqtt-bench
broker=target/debug/amqtt

work=$(mktemp -d "${TMPDIR:-/tmp}/amqtt-bench-smoke.XXXXXX")
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$("$bench" free-port)
cat >"$work/amqtt.yaml" <<EOF
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:$port
EOF
RUST_LOG=warn "$broker" -c "$work/amqtt.yaml" 2>"$work/broker.log" &
broker_pid=$!
"$bench" wait-port --port "$port" --timeout 30

status=0
"$bench" smoke --port "$port" --broker-pid "$broker_pid" --label amqtt-rs || status=$?

kill -TERM "$broker_pid"
wait "$broker_pid" || status=$((status == 0 ? 1 : status))
broker_pid=""
if [ "$status" -ne 0 ]; then
    echo "bench/smoke.sh: FAILED; the broker's warnings:" >&2
    tail -20 "$work/broker.log" >&2
    exit "$status"
fi
bench/soak.sh --debug --no-build --duration 20 -- --rate 1000
# The same with `sync: periodic`: acknowledgements wait for commits without fsync there.
bench/soak.sh --debug --no-build --duration 20 --sync periodic -- --rate 1000
