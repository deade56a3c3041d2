#!/usr/bin/env bash
# tests/wheel/run.sh wheel|sdist DIST: installs the package as a user would, into a fresh venv
# outside the checkout, and makes a call from another directory with an empty environment (no
# GF_LIBRARY, no PYTHONPATH: the package must find the library it carries).
#
# - wheel: the manylinux wheel in DIST, installed with --no-index (it has no dependencies); also
#   checks its tag, that the bundled library is stripped and carries its SONAME.
# - sdist: pip builds DIST's sdist from source (cargo; setuptools from PyPI), as `pip install
#   grpc_failover-V.tar.gz` does on a user's machine.
set -euo pipefail
mode=${1:?wheel or sdist}
dist=$(cd "${2:?DIST}" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
server_bin=${GF_TESTSERVER:-$repo/target/release/gf-testserver}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)

work=$(mktemp -d /tmp/gf-wheel-test.XXXXXX)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "wheel test ($mode): $*" >&2; exit 1; }

python3 -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check -q)
case $mode in
wheel)
    wheel=$(ls "$dist"/grpc_failover-"$version"-py3-none-manylinux_*.whl 2>/dev/null | head -1)
    [ -n "$wheel" ] || fail "no manylinux wheel of $version in $dist"
    "${pip[@]}" install --no-index "$wheel"
    ;;
sdist)
    sdist=$(ls "$dist"/grpc[-_]failover-"$version".tar.gz 2>/dev/null | head -1)
    [ -n "$sdist" ] || fail "no sdist of $version in $dist"
    # Built where the user's pip builds it: a temporary directory, not this checkout's target/.
    env -u CARGO_TARGET_DIR -u GF_LIBRARY "${pip[@]}" install "$sdist"
    ;;
*) fail "unknown mode $mode" ;;
esac

# A backend for the call, started and stopped by PID.
coproc SERVER { exec "$server_bin" --listen 127.0.0.1:0 --name wheel; }
server_pid=$SERVER_PID
read -r first <&"${SERVER[0]}"
addr=${first#listening }
[ "$first" != "$addr" ] || fail "gf-testserver did not start: $first"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
env -i "$work/venv/bin/python" - "$addr" "$work/venv" <<'PY'
import os, subprocess, sys
addr, venv = sys.argv[1], sys.argv[2]
import grpc_failover
from grpc_failover import Client

lib = grpc_failover.library_path()
assert lib.startswith(venv + "/"), f"loaded {lib}, not the installed package's library"
with Client(f"static:///{addr}") as c:
    assert c.invoke("/test.Svc/Echo", b"from the wheel", timeout=10) == b"from the wheel"
    assert c.invoke("/test.Svc/Whoami", timeout=10) == b"wheel"
sections = subprocess.run(["/usr/bin/readelf", "-S", "-d", lib], capture_output=True, text=True, check=True).stdout
assert ".debug_info" not in sections, "the bundled library is not stripped"
assert "libgrpc_failover.so.0" in sections, "the bundled library has no SONAME"
print(f"wheel test: grpc_failover {grpc_failover.__version__} from {lib} ({os.path.getsize(lib)} bytes): call ok")
PY
