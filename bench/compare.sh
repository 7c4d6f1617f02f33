#!/usr/bin/env bash
# Runs every amqtt-bench scenario against amqtt-rs (release build), Mosquitto and rumqttd (and
# aMQTT, the Python broker, with --amqtt), one after the other on this machine, and writes
# docs/BENCHMARKS.md: machine, date, commands, one table per scenario, ratios, targets.
#
#   bench/compare.sh [--duration SECONDS] [--amqtt] [--brokers "amqtt-rs mosquitto rumqttd"]
#                    [--scenarios "KEY ..."] [--out FILE]
#
# --scenarios runs only the scenarios named (keys: fanin-qos0 fanin-qos1 fanout-qos0 pairs-qos1
# connections latency-qos0 latency-qos1 pairs-qos1-persistent slow-consumer-qos0
# slow-consumer-qos1); a word that is no key selects every key containing it, e.g. "persist",
# "fanin", "latency", "slow".
#
# Each scenario gets a fresh broker process on a free port of 127.0.0.1, so that the RSS figures
# of one scenario are not polluted by the previous one. pairs-qos1-persistent (subscribers with
# persistent sessions) runs amqtt-rs three times (persistence off, sync always, sync periodic)
# and Mosquitto twice (persistence true, false), each store in a fresh directory of
# target/bench-run. Missing peers are installed: Mosquitto with apt-get (Debian package, run
# directly with our config, not as a service), rumqttd with cargo install, aMQTT with pip into
# target/bench-venv. Every broker started is killed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

duration=10
with_amqtt=false
brokers="amqtt-rs mosquitto rumqttd"
only=""
out=docs/BENCHMARKS.md
command_line="bench/compare.sh $*"

usage() {
    # The comment block at the top of this file, without its leading "# ".
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --duration=*) duration=${1#*=}; shift ;;
        --amqtt) with_amqtt=true; shift ;;
        --brokers) brokers=$2; shift 2 ;;
        --brokers=*) brokers=${1#*=}; shift ;;
        --scenarios) only=$2; shift 2 ;;
        --scenarios=*) only=${1#*=}; shift ;;
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$with_amqtt" = true ] && [[ " $brokers " != *" aMQTT "* ]]; then
    brokers="$brokers aMQTT"
fi

# key|amqtt-bench arguments
scenarios=(
    "fanin-qos0|fan-in --qos 0"
    "fanin-qos1|fan-in --qos 1"
    "fanout-qos0|fan-out"
    "pairs-qos1|pairs"
    "connections|connections"
    "latency-qos0|latency --qos 0"
    "latency-qos1|latency --qos 1"
    "pairs-qos1-persistent|pairs --persistent-subscribers"
    # Prints its verdict in the JSON rather than failing: every broker's figures are reported.
    "slow-consumer-qos0|slow-consumer --qos 0 --report-only --sys-interval 1"
    "slow-consumer-qos1|slow-consumer --qos 1 --report-only --sys-interval 1"
)
if [ -n "$only" ]; then
    IFS=', ' read -ra words <<<"$only"
    keys=" ${scenarios[*]%%|*} "
    # A key selects itself; any other word, every key containing it.
    selects() { [ "$1" = "$2" ] || { [[ $keys != *" $2 "* ]] && [[ $1 == *"$2"* ]]; }; }
    for word in "${words[@]}"; do
        found=false
        for entry in "${scenarios[@]}"; do
            if selects "${entry%%|*}" "$word"; then found=true; fi
        done
        if [ "$found" = false ]; then
            echo "compare.sh: --scenarios: \"$word\" selects none of:$keys" >&2
            exit 2
        fi
    done
    selected=()
    for entry in "${scenarios[@]}"; do
        for word in "${words[@]}"; do
            if selects "${entry%%|*}" "$word"; then
                selected+=("$entry")
                break
            fi
        done
    done
    if [ ${#selected[@]} -eq 0 ]; then
        echo "compare.sh: --scenarios names no scenario; keys:$keys" >&2
        exit 2
    fi
    scenarios=("${selected[@]}")
fi

# Thousands of sockets in each broker and in the bench (5 000 idle connections).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$nofile" -lt 10240 ]; then
    echo "compare.sh: the open-files limit is $nofile; run 'ulimit -n 65536' (as root if needed) first" >&2
    exit 1
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== building amqtt-rs and amqtt-bench (release)" >&2
cargo build --release -p amqtt-broker -p amqtt-bench
bench=$root/target/release/amqtt-bench
amqtt_rs=$root/target/release/amqtt

# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
find_mosquitto() { command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; }; }
find_rumqttd() { command -v rumqttd 2>/dev/null || { [ -x "$HOME/.cargo/bin/rumqttd" ] && echo "$HOME/.cargo/bin/rumqttd"; }; }
mosquitto_bin=""
rumqttd_bin=""
venv=$root/target/bench-venv
if [[ " $brokers " == *" mosquitto "* ]] && ! mosquitto_bin=$(find_mosquitto); then
    echo "== installing mosquitto (apt-get)" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto
    mosquitto_bin=$(find_mosquitto)
fi
if [[ " $brokers " == *" rumqttd "* ]] && ! rumqttd_bin=$(find_rumqttd); then
    echo "== installing rumqttd (cargo install)" >&2
    # rumqttd 0.20's lock file pins metrics 0.22.1, which newer compilers refuse (E0521):
    # without --locked, cargo takes a fixed patch release.
    cargo install rumqttd --no-default-features --locked || cargo install rumqttd --no-default-features
    rumqttd_bin=$(find_rumqttd)
fi
if [[ " $brokers " == *" aMQTT "* ]] && [ ! -x "$venv/bin/amqtt" ]; then
    echo "== installing aMQTT into $venv (pip)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet amqtt
fi

work=$root/target/bench-run
rm -rf "$work"
mkdir -p "$work"
results=$work/results.jsonl
: >"$results"

# Every broker process we started and have not reaped yet.
started=()
broker_pid=""
broker_log=""
broker_store=""
# $SYS interval in seconds for the next broker started; empty: the broker's default. The
# slow-consumer scenario reads the drop counter ($SYS/broker/publish/messages/dropped) every
# second.
sys_interval=""
cleanup() {
    for pid in "${started[@]+"${started[@]}"}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Writes NAME's configuration for PORT into $work and starts it; sets broker_pid and broker_log.
# VARIANT (optional) turns persistence on, with its store in a fresh directory of $work (set in
# broker_store): amqtt-rs: sync-always or sync-periodic; mosquitto: persistence.
start_broker() {
    local name=$1 port=$2 variant=${3:-} tag conf log store="" persistence
    tag=$name${variant:+-$variant}
    log=$work/$tag.log
    broker_log=$log
    if [ -n "$variant" ]; then
        store=$(mktemp -d "$work/$tag-store.XXXXXX")
    fi
    broker_store=$store
    case $name:$variant in
        amqtt-rs:*)
            case $variant in
                "") persistence="" ;;
                sync-always) persistence="persistence: {enabled: true, path: \"$store/amqtt.redb\", sync: always}" ;;
                sync-periodic)
                    persistence="persistence: {enabled: true, path: \"$store/amqtt.redb\", sync: periodic, sync-interval: 1}"
                    ;;
                *) echo "compare.sh: unknown amqtt-rs variant $variant" >&2; return 1 ;;
            esac
            conf=$work/$tag.yaml
            cat >"$conf" <<EOF
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:$port
max-inflight-messages: 20
max-queued-messages: 1000
auth:
  allow-anonymous: true
${sys_interval:+sys_interval: $sys_interval}
$persistence
EOF
            RUST_LOG=warn "$amqtt_rs" -c "$conf" >>"$log" 2>&1 &
            ;;
        mosquitto:*)
            case $variant in
                "") persistence="persistence false" ;;
                persistence)
                    persistence=$'persistence true\npersistence_location '"$store/"
                    # Started as root, Mosquitto runs as its own user, which must write there.
                    if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then
                        chown mosquitto "$store"
                    fi
                    ;;
                *) echo "compare.sh: unknown mosquitto variant $variant" >&2; return 1 ;;
            esac
            conf=$work/$tag.conf
            cat >"$conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
$persistence
max_queued_messages 1000
max_inflight_messages 20
${sys_interval:+sys_interval $sys_interval}
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
            "$mosquitto_bin" -c "$conf" >>"$log" 2>&1 &
            ;;
        rumqttd:)
            conf=$work/rumqttd.toml
            cat >"$conf" <<EOF
id = 0

[router]
max_connections = 20000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 20
    dynamic_filters = true
EOF
            "$rumqttd_bin" -q -c "$conf" >>"$log" 2>&1 &
            ;;
        aMQTT:)
            conf=$work/amqtt.yaml
            # aMQTT 0.12's default_broker.yaml, on our port.
            cat >"$conf" <<EOF
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:$port
plugins:
  amqtt.plugins.logging_amqtt.EventLoggerPlugin:
  amqtt.plugins.logging_amqtt.PacketLoggerPlugin:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
  amqtt.plugins.sys.broker.BrokerSysPlugin:
    sys_interval: 20
EOF
            "$venv/bin/amqtt" -c "$conf" >>"$log" 2>&1 &
            ;;
        *)
            echo "compare.sh: unknown broker $name${variant:+ (variant $variant)}" >&2
            return 1
            ;;
    esac
    broker_pid=$!
    started+=("$broker_pid")
    if ! "$bench" wait-port --port "$port" --timeout 30; then
        echo "compare.sh: $name did not start; its log:" >&2
        tail -20 "$log" >&2
        return 1
    fi
}

# Stops the broker started last (SIGTERM, then SIGKILL after 10 s).
stop_broker() {
    local i
    kill -TERM "$broker_pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    local remaining=()
    for i in "${started[@]+"${started[@]}"}"; do
        [ "$i" = "$broker_pid" ] || remaining+=("$i")
    done
    started=("${remaining[@]+"${remaining[@]}"}")
    broker_pid=""
}

# The runs of scenario KEY against BROKER, one per line: variant|label (see start_broker). With
# persistent subscribers, amqtt-rs runs with persistence off, sync always and sync periodic, and
# Mosquitto with persistence true and false; the labels name the configuration.
runs_of() {
    local key=$1 broker=$2
    case $key:$broker in
        pairs-qos1-persistent:amqtt-rs)
            printf '%s\n' "|amqtt-rs (persistence off)" "sync-always|amqtt-rs (sync always)" \
                "sync-periodic|amqtt-rs (sync periodic)"
            ;;
        pairs-qos1-persistent:mosquitto)
            printf '%s\n' "persistence|mosquitto (persistence true)" "|mosquitto (persistence false)"
            ;;
        *) echo "|$broker" ;;
    esac
}

# Scenario by scenario, each broker in turn: whatever else the machine is doing meanwhile
# disturbs the brokers' figures of one scenario alike, rather than one broker's whole column.
for entry in "${scenarios[@]}"; do
    key=${entry%%|*}
    args=${entry#*|}
    case $key in
        slow-consumer-*) sys_interval=1 ;;
        *) sys_interval="" ;;
    esac
    for broker in $brokers; do
        while IFS='|' read -r variant label; do
            port=$("$bench" free-port)
            echo "== $label: $key (port $port)" >&2
            if ! start_broker "$broker" "$port" "$variant"; then
                echo "{\"scenario\":\"$key\",\"label\":\"$label\",\"error\":\"the broker did not start\"}" |
                    tee -a "$results" >&2
                stop_broker
                continue
            fi
            # shellcheck disable=SC2086 # $args is a list of words
            if ! line=$("$bench" $args --port "$port" --duration "$duration" --broker-pid "$broker_pid" \
                --label "$label" --json </dev/null); then
                line="{\"scenario\":\"$key\",\"label\":\"$label\",\"error\":\"amqtt-bench failed (see above)\"}"
            fi
            if ! kill -0 "$broker_pid" 2>/dev/null; then
                line=${line%\}}
                line="$line,\"broker_died\":true}"
                echo "compare.sh: $label died during $key; its log:" >&2
                tail -20 "$broker_log" >&2
            fi
            stop_broker
            if [ -n "$broker_store" ]; then
                # What the broker left on disk (after its graceful stop): 0 means it saved nothing.
                line="${line%\}},\"store_bytes\":$(du -sb "$broker_store" | cut -f1)}"
            fi
            echo "$line" | tee -a "$results" >&2
        done < <(runs_of "$key" "$broker")
    done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Versions and machine, for the report.
export BENCH_COMMAND="$command_line"
export BENCH_DURATION="$duration"
export BENCH_BROKERS="$brokers"
export BENCH_LOAD_BEFORE="$load_before"
export BENCH_LOAD_AFTER="$load_after"
export BENCH_NPROC
BENCH_NPROC=$(nproc)
export BENCH_CPU
BENCH_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
export BENCH_KERNEL
BENCH_KERNEL=$(uname -srm)
export BENCH_MEMORY
BENCH_MEMORY=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
export BENCH_DATE
BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
export BENCH_VERSIONS
BENCH_VERSIONS="amqtt-rs $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]; then
    BENCH_VERSIONS="$BENCH_VERSIONS (with uncommitted changes)"
fi
if [ -n "$mosquitto_bin" ]; then
    BENCH_VERSIONS="$BENCH_VERSIONS; $("$mosquitto_bin" -h 2>/dev/null | head -1 || true)"
fi
if [ -n "$rumqttd_bin" ]; then
    BENCH_VERSIONS="$BENCH_VERSIONS; $(grep -m1 -o '"rumqttd [0-9.]*' "$HOME/.cargo/.crates.toml" 2>/dev/null | tr -d '"' || echo rumqttd)"
fi
if [ -x "$venv/bin/pip" ] && [[ " $brokers " == *" aMQTT "* ]]; then
    BENCH_VERSIONS="$BENCH_VERSIONS; aMQTT $("$venv/bin/pip" show amqtt 2>/dev/null | awk '/^Version/ { print $2 }')"
fi
export BENCH_CONFIGS
BENCH_CONFIGS=$work
# Where the persistence scenario's stores were: its figures depend on that disk's fsync.
export BENCH_STORE
BENCH_STORE=$(df -PT "$work" | awk 'NR == 2 { print $2 " on " $1 }')

mkdir -p "$(dirname "$out")"
python3 "$root/bench/report.py" "$results" "$out"
echo "== wrote $out (raw results: $results)" >&2
