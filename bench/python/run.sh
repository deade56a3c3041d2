#!/usr/bin/env bash
# The Python part of `make bench` (bench/run.sh calls it): grpc_failover's Python binding vs
# grpcio against the same gf-testserver, raw bytes and through stubs that bench.py generates
# with grpcio-tools. Makes build/venv-bench on first use with grpcio, grpcio-tools and protobuf
# from PyPI and the binding installed from this checkout, prints the tables and writes
# bench/results/parts/python.md. GF_BENCH_SECONDS sets the seconds per side and row (default
# 3); extra arguments go to bench.py (e.g. --repeat 3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${GF_BENCH_VENV:-$repo/build/venv-bench}

export GF_LIBRARY=${GF_LIBRARY:-$repo/target/release/libgrpc_failover.so}
export GF_TESTSERVER=${GF_TESTSERVER:-$repo/target/release/gf-testserver}
for f in "$GF_LIBRARY" "$GF_TESTSERVER"; do
    [ -f "$f" ] || { echo "bench/python/run.sh: $f not found: run \`make build\` first" >&2; exit 1; }
done

# shellcheck source=../../bindings/python/venv.sh
. "$repo/bindings/python/venv.sh"
gf_python_venv "$venv" grpcio grpcio-tools protobuf matplotlib

cd "$repo"
mkdir -p bench/results/parts
"$venv/bin/python" "$here/bench.py" --testserver "$GF_TESTSERVER" --seconds "${GF_BENCH_SECONDS:-3}" \
    --out bench/results/parts/python.md "$@"
