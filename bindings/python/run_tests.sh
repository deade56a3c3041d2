#!/usr/bin/env bash
# Runs the Python binding's tests (`make test-python`): a venv in build/venv-python, made on
# first use, with pytest and this package installed from the checkout, then pytest against
# real etcd and gf-testserver processes. Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${GF_PYTHON_VENV:-$repo/build/venv-python}
python=${PYTHON:-python3}

export GF_LIBRARY=${GF_LIBRARY:-$repo/target/release/libgrpc_failover.so}
export GF_TESTSERVER=${GF_TESTSERVER:-$repo/target/release/gf-testserver}
for f in "$GF_LIBRARY" "$GF_TESTSERVER"; do
    [ -f "$f" ] || { echo "run_tests.sh: $f not found: run \`make build\` first" >&2; exit 1; }
done

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv"; then
        # Debian's own python3 ships venv in a separate package.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            rm -rf "$venv"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
            "$python" -m venv "$venv"
        else
            echo "run_tests.sh: cannot create a venv with $python; install python3-venv" >&2
            exit 1
        fi
    fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install pytest pytest-timeout setuptools wheel
# A normal (not editable) install, as users get it: the package must find its bundled library.
"${pip[@]}" install --no-build-isolation --no-deps --force-reinstall "$here"

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
