#!/usr/bin/env bash
# make demo: a real etcd, three gf-testservers registered with weights 1, 2 and 3 and a 3 s
# lease, and a C client (examples/demo_client.c) calling them with the reference retry policy
# under smooth weighted round robin plus outlier detection. At 5 s one instance is SIGKILLed,
# at 10 s it starts again. Callers should see no error. Every process started here is stopped
# on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIB=$ROOT/target/release
DURATION=${GF_DEMO_SECONDS:-15}

gcc -O2 -std=c11 -Wall -Wextra -I include examples/demo_client.c -L "$LIB" -lgrpc_failover -lpthread \
    -Wl,-rpath,"$LIB" -o "$LIB/gf-demo-client"

TMP=$(mktemp -d)
PIDS=$TMP/pids   # every process started here, also from the chaos subshell
: >"$PIDS"
track() { echo "$1" >>"$PIDS"; }
cleanup() {
    local all
    all=$(cat "$PIDS" 2>/dev/null || true)
    for p in $all; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in $all; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SERVICE_CONFIG='{
  "loadBalancingConfig": [{"outlier_detection": {
      "interval": "1s", "baseEjectionTime": "5s", "maxEjectionPercent": 34,
      "failurePercentageEjection": {"threshold": 50, "minimumHosts": 3, "requestVolume": 10},
      "childPolicy": [{"weighted_round_robin": {}}]}}],
  "methodConfig": [{
      "name": [{"service": "UserService"}],
      "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                      "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}}]}'

if command -v etcd >/dev/null 2>&1; then
    CLIENT_PORT=$(free_port); PEER_PORT=$(free_port)
    etcd --name demo --data-dir "$TMP/etcd" \
        --listen-client-urls "http://127.0.0.1:$CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-cluster "demo=http://127.0.0.1:$PEER_PORT" >"$TMP/etcd.log" 2>&1 &
    track $!
    disown $!
    ETCD=127.0.0.1:$CLIENT_PORT
    for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
    echo "etcd on $ETCD"
    TARGET=etcd:///service/user
    OPTIONS="{\"etcd\": {\"endpoints\": [\"$ETCD\"]}, \"connect_backoff\": {\"base_delay_ms\": 200, \"max_delay_ms\": 1000}, \"service_config\": $SERVICE_CONFIG}"
else
    echo "etcd is not installed and could not be installed: running the same scenario on a static:/// target"
    ETCD=
fi

declare -A PORT PID
start_instance() { # name weight
    local name=$1 weight=$2
    local args=(--listen "127.0.0.1:${PORT[$name]}" --name "$name")
    [ -n "$ETCD" ] && args+=(--etcd "$ETCD" --prefix service/user --weight "$weight" --ttl 3)
    "$LIB/gf-testserver" "${args[@]}" >"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    track $!
    disown $!
    for _ in $(seq 100); do grep -q '^listening' "$TMP/$name.log" && break; sleep 0.05; done
    if [ -n "$ETCD" ]; then for _ in $(seq 100); do grep -q '^registered' "$TMP/$name.log" && break; sleep 0.05; done; fi
    echo "started instance $name (weight $weight) on 127.0.0.1:${PORT[$name]}"
}

for n in a b c; do PORT[$n]=$(free_port); done
start_instance a 1
start_instance b 2
start_instance c 3
if [ -z "$ETCD" ]; then
    TARGET="static:///127.0.0.1:${PORT[a]},127.0.0.1:${PORT[b]},127.0.0.1:${PORT[c]}"
    OPTIONS="{\"connect_backoff\": {\"base_delay_ms\": 200, \"max_delay_ms\": 1000}, \"service_config\": $SERVICE_CONFIG}"
    echo "(a static target carries no weights: every instance has weight 1)"
fi

echo "client: $TARGET, 8 threads, ${DURATION}s; weights a=1 b=2 c=3; c is killed at 5 s and restarted at 10 s"
"$LIB/gf-demo-client" "$TARGET" "$OPTIONS" 8 "$DURATION" &
CLIENT=$!
track $CLIENT
(
    sleep 5
    kill -9 "${PID[c]}" 2>/dev/null && echo ">>> t=5s: SIGKILL instance c"
    sleep 5
    start_instance c 3 >/dev/null && echo ">>> t=10s: instance c started again"
) &
track $!
wait "$CLIENT"
