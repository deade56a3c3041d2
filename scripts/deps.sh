#!/usr/bin/env bash
# Installs what the build and the tests need and is missing: etcd (server and etcdctl),
# protoc and the protobuf includes (etcd-client's build), valgrind, openssl (the TLS tests'
# RSA keys and the bindings' test certificates), cmake (the find_package test), Python test
# packages.
# Runs apt-get/pip only when something is missing; as root only (CI and these machines).
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "deps: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
            echo "deps: apt-get could not install ${missing[*]}" >&2
        fi
        # Debian's package may start etcd as a service; the tests start their own.
        (systemctl stop etcd 2>/dev/null || service etcd stop 2>/dev/null || true) >/dev/null 2>&1
    else
        echo "deps: missing ${missing[*]}; run as root or install them" >&2
    fi
fi

# protoc is needed to build at all; without etcd the tests fail and the demo falls back to a
# static:/// target, so only a missing protoc stops here.
if ! command -v protoc >/dev/null 2>&1; then
    echo "deps: protoc (protobuf-compiler) is required to build etcd-client" >&2
    exit 1
fi
command -v etcd >/dev/null 2>&1 || echo "deps: warning: etcd is not installed; etcd tests will fail" >&2

# The fuzzers (make fuzz, make test-fuzz), the sanitizer build (tests/c) and Miri (make
# test-miri) need the nightly toolchain; without it those steps fall back or skip, as each says.
# With it, install what they need once: cargo-fuzz from crates.io, Miri and the std sources
# from rustup. Best effort: a failure here only means the fallback runs.
if cargo +nightly --version >/dev/null 2>&1; then
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "deps: installing cargo-fuzz"
        cargo install --quiet --locked cargo-fuzz --version 0.13.1 ||
            echo "deps: warning: cargo-fuzz did not install; make test-fuzz replays seeds on stable" >&2
    fi
    if ! cargo +nightly miri --version >/dev/null 2>&1; then
        echo "deps: adding miri and rust-src to the nightly toolchain"
        rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 ||
            echo "deps: warning: rustup could not add miri; make test-miri skips" >&2
    fi
fi
