#!/usr/bin/env bash
# Runs the Python binding's tests (`make test-python`): a venv in build/venv-python, made on
# first use, with pytest and this package installed from the checkout, then pytest against
# real etcd and gf-testserver processes. Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${GF_PYTHON_VENV:-$repo/build/venv-python}

export GF_LIBRARY=${GF_LIBRARY:-$repo/target/release/libgrpc_failover.so}
export GF_TESTSERVER=${GF_TESTSERVER:-$repo/target/release/gf-testserver}
for f in "$GF_LIBRARY" "$GF_TESTSERVER"; do
    [ -f "$f" ] || { echo "run_tests.sh: $f not found: run \`make build\` first" >&2; exit 1; }
done

# shellcheck source=venv.sh
. "$here/venv.sh"
gf_python_venv "$venv" pytest pytest-timeout grpcio grpcio-tools protobuf prometheus_client

cd "$here"
set +e
# bin/pytest rather than `python -m pytest`, which would put this directory on sys.path and
# import the source tree instead of the installed package.
"$venv/bin/pytest" --timeout=120 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "run_tests.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
