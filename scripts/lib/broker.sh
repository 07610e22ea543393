# shellcheck shell=bash
# A Kafka-protocol broker for the tests: tansu with SQLite storage, on a
# free loopback port, in a temporary directory. Source this file, then:
#
#   ensure_kafka_build_deps   # C toolchain for rdkafka's bundled librdkafka
#   ensure_tansu              # installs tansu into cargo's bin directory once
#   start_broker              # exports WALLET_TEST_KAFKA and WALLET_TANSU_BIN
#   trap stop_broker EXIT
#
# Only SQLite storage is used: tansu's memory engine was seen to report
# wrong high watermarks and to lose a resumed partition.

TANSU_VERSION=0.6.0

# What the rdkafka crate's build (librdkafka compiled from its bundled
# sources by ./configure and make, zlib found with pkg-config, TLS and
# SASL PLAIN and SCRAM against the system's OpenSSL) needs on Debian.
# Installed only when something is missing.
ensure_kafka_build_deps() {
    local missing=()
    command -v cc >/dev/null || missing+=(build-essential)
    command -v make >/dev/null || missing+=(make)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    if ((${#missing[@]})); then
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends \
            build-essential make pkg-config zlib1g-dev libssl-dev
    fi
}

# The tansu binary: $WALLET_TANSU_BIN, else tansu on PATH or in cargo's bin
# directory, installed there (about ten minutes on two cores) when absent.
ensure_tansu() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    if [[ -n ${WALLET_TANSU_BIN:-} && -x $WALLET_TANSU_BIN ]]; then
        :
    elif command -v tansu >/dev/null; then
        WALLET_TANSU_BIN=$(command -v tansu)
    elif [[ -x $cargo_bin/tansu ]]; then
        WALLET_TANSU_BIN=$cargo_bin/tansu
    else
        echo "installing tansu $TANSU_VERSION (once; about ten minutes)" >&2
        cargo install tansu --version "$TANSU_VERSION" --locked --features libsql
        WALLET_TANSU_BIN=$cargo_bin/tansu
    fi
    export WALLET_TANSU_BIN
}

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 - <<'PY' 2>/dev/null && return
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
    # Without python3: probe ports until one refuses connections.
    local port
    for port in $(shuf -i 20000-60000 -n 50); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    return 1
}

# Starts tansu on a free loopback port with SQLite storage in a new
# temporary directory, waits until it answers, and exports
# WALLET_TEST_KAFKA (its bootstrap address). BROKER_PID and BROKER_DIR say
# what stop_broker stops and removes.
start_broker() {
    ensure_tansu
    local port
    port=$(free_port) || { echo "no free port" >&2; return 1; }
    BROKER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/wallet-broker.XXXXXX")
    (
        # tansu reads a sqlite:// path relative to its working directory.
        cd "$BROKER_DIR" || exit 1
        exec "$WALLET_TANSU_BIN" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "sqlite://broker.db" \
            >"$BROKER_DIR/broker.log" 2>&1
    ) &
    BROKER_PID=$!
    local waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "tansu exited; its log:" >&2
            cat "$BROKER_DIR/broker.log" >&2
            return 1
        fi
        if ((waited >= 300)); then
            echo "tansu did not answer on 127.0.0.1:$port within 30 s" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    "$(dirname "${BASH_SOURCE[0]}")/tansu-index" "$BROKER_DIR/broker.db"
    export WALLET_TEST_KAFKA="127.0.0.1:$port"
    echo "broker (tansu, pid $BROKER_PID) at $WALLET_TEST_KAFKA, data in $BROKER_DIR" >&2
}

# Stops the broker start_broker started and removes its directory. Safe to
# call twice, and when nothing was started.
stop_broker() {
    if [[ -n ${BROKER_PID:-} ]]; then
        kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
        BROKER_PID=
    fi
    if [[ -n ${BROKER_DIR:-} && -d $BROKER_DIR ]]; then
        rm -rf "$BROKER_DIR"
        BROKER_DIR=
    fi
}
