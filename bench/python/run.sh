#!/usr/bin/env bash
# The Python part of `make bench` (bench/run.sh calls it): grpc_failover's Python binding vs
# grpcio against the same gf-testserver. Makes build/venv-bench on first use with grpcio from
# PyPI and the binding installed from this checkout, prints the table and writes
# bench/results/parts/python.md. GF_BENCH_SECONDS sets the seconds per side and row (default
# 3); extra arguments go to bench.py (e.g. --repeat 3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${GF_BENCH_VENV:-$repo/build/venv-bench}
python=${PYTHON:-python3}

export GF_LIBRARY=${GF_LIBRARY:-$repo/target/release/libgrpc_failover.so}
export GF_TESTSERVER=${GF_TESTSERVER:-$repo/target/release/gf-testserver}
for f in "$GF_LIBRARY" "$GF_TESTSERVER"; do
    [ -f "$f" ] || { echo "bench/python/run.sh: $f not found: run \`make build\` first" >&2; exit 1; }
done

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv"; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            rm -rf "$venv"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
            "$python" -m venv "$venv"
        else
            echo "bench/python/run.sh: cannot create a venv with $python; install python3-venv" >&2
            exit 1
        fi
    fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install grpcio setuptools wheel
"${pip[@]}" install --no-build-isolation --no-deps --force-reinstall "$repo/bindings/python"

cd "$repo"
mkdir -p bench/results/parts
"$venv/bin/python" "$here/bench.py" --testserver "$GF_TESTSERVER" --seconds "${GF_BENCH_SECONDS:-3}" \
    --out bench/results/parts/python.md "$@"
