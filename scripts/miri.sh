#!/usr/bin/env bash
# `make test-miri`: the C ABI's unit tests (src/ffi: the panic boundary, argument readers,
# gf_bytes, strings, gf_call_options, gf_result, gf_queue) under Miri, which checks every
# pointer the unsafe code reads, writes and frees, and reports leaks. Miri cannot run the
# network side (sockets, the runtime's I/O driver); tests/c's sanitizer step covers that.
# Skips, and says so, when the nightly toolchain has no Miri (make deps tries to add it).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "test-miri: skipped: the nightly toolchain has no Miri (rustup component add --toolchain nightly miri rust-src)"
    exit 0
fi
# No mimalloc: Miri runs Rust code only. Isolation stays on; the tests need no clock or files.
CARGO_TARGET_DIR=target/miri cargo +nightly miri test --quiet --lib --no-default-features -- ffi::
