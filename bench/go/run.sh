#!/usr/bin/env bash
# The Go part of `make bench` (bench/run.sh calls it): the Go binding against the reference setup
# written with grpc-go itself (grpc-go client, etcd's naming resolver, the reference failover
# service config with round_robin), both resolving the same three gf-testservers through one
# etcd, raw bytes and through stubs that echopb/gen.sh generates here first from
# tests/proto/echo.proto (nothing generated is committed). Prints the tables and writes
# bench/results/parts/go.md and bench/results/parts/failover_timeline.csv. Extra arguments go to
# the program (e.g. -seconds 5 -repeat 3; see main.go).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
testserver=${GF_TESTSERVER:-$repo/target/release/gf-testserver}
for f in "$testserver" "$repo/target/release/libgrpc_failover.so"; do
    [ -f "$f" ] || { echo "bench/go/run.sh: $f not found: run \`make build\` first" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "bench/go/run.sh: etcd not found: run \`make deps\`" >&2; exit 1; }

cd "$here"
bash echopb/gen.sh
go build -o "$repo/target/release/gf-gobench" .
"$repo/target/release/gf-gobench" -testserver "$testserver" -out "$repo/bench/results/parts" \
    -seconds "${GF_BENCH_SECONDS:-3}" "$@"
