#!/usr/bin/env bash
# The C and C++ test suite of grpc-failover (`make test-c`). See tests/c/README.md.
#
# Builds the C11 and the C++17 test programs against include/grpc_failover.h, links each once
# against the shared and once against the static library, runs all four at full size, then
# runs the C program (shared) and the C++ program (static) again under a memory checker with
# the heavy loops scaled down, and once more built with ASan and UBSan against the library
# built with ASan (tests/c/README.md, "Sanitizers"). Also checks that the header compiles
# alone as C11 and C++17 and that examples/client.c builds and runs. Exits non-zero if any
# step fails.
#
# Environment (defaults relative to the repository root):
#   GF_LIBRARY         target/release/libgrpc_failover.so
#   GF_STATIC_LIBRARY  the .a next to GF_LIBRARY
#   GF_TESTSERVER      target/release/gf-testserver
#   GF_TEST_CERTS      (set here) the certificates scripts/test-certs.sh made for the TLS test
#   GF_INCLUDE         include
#   GF_STATIC_LIBS     what the static library needs (from `cargo rustc --release --lib --
#                      --print native-static-libs`)
#   GF_MEMCHECK        valgrind | asan | none (default: valgrind if installed, else asan)
#   GF_MEMCHECK_LIBRARY the shared library the memory checker runs link (its .a next to it);
#                      default: target/memcheck/release/libgrpc_failover.so, built here with
#                      `--no-default-features` (glibc's malloc instead of mimalloc, whose heap
#                      valgrind and LSan cannot see)
#   GF_MEMCHECK_SCALE  loop scale under the memory checker (default 0.5)
#   GF_SANITIZERS      auto (default: the library built with nightly's -Zsanitizer=address
#                      when nightly is installed, else uninstrumented) | c-only | off
#   CC, CXX            compilers (default cc, c++)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/c"
GF_LIBRARY="${GF_LIBRARY:-$ROOT/target/release/libgrpc_failover.so}"
GF_STATIC_LIBRARY="${GF_STATIC_LIBRARY:-${GF_LIBRARY%.so}.a}"
GF_TESTSERVER="${GF_TESTSERVER:-$ROOT/target/release/gf-testserver}"
GF_INCLUDE="${GF_INCLUDE:-$ROOT/include}"
GF_STATIC_LIBS="${GF_STATIC_LIBS:--lgcc_s -lutil -lrt -lpthread -lm -ldl -lc}"
GF_MEMCHECK_SCALE="${GF_MEMCHECK_SCALE:-0.5}"
CC="${CC:-cc}"
CXX="${CXX:-c++}"
OUT="$ROOT/target/c-tests"
export GF_TESTSERVER

if [ -z "${GF_MEMCHECK:-}" ]; then
    if command -v valgrind >/dev/null 2>&1; then GF_MEMCHECK=valgrind; else GF_MEMCHECK=asan; fi
fi

for f in "$GF_LIBRARY" "$GF_STATIC_LIBRARY" "$GF_TESTSERVER" "$GF_INCLUDE/grpc_failover.h"; do
    if [ ! -e "$f" ]; then
        echo "tests/c: $f is missing; run 'make build' first" >&2
        exit 1
    fi
done
mkdir -p "$OUT"
LIB_DIR="$(cd "$(dirname "$GF_LIBRARY")" && pwd)"
# Programs linked against the .so load it by its SONAME (libgrpc_failover.so.0) at run time.
[ "$(basename "$GF_LIBRARY")" = libgrpc_failover.so ] && bash "$ROOT/scripts/soname-link.sh" "$LIB_DIR"
LIB_NAME="$(basename "$GF_LIBRARY" .so)"
LIB_NAME="${LIB_NAME#lib}"

CFLAGS=(-std=c11 -Wall -Wextra -Werror -g -O1 -pthread -I "$GF_INCLUDE")
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -g -O1 -pthread -I "$GF_INCLUDE")
SHARED=(-L "$LIB_DIR" -l"$LIB_NAME" -Wl,-rpath,"$LIB_DIR")
# shellcheck disable=SC2206 # a list of linker flags, split on purpose
STATIC=("$GF_STATIC_LIBRARY" $GF_STATIC_LIBS)

failed=()
started=$SECONDS
server_pid=""
# The TLS test's certificates, made now (nothing committed expires).
GF_TEST_CERTS="$(mktemp -d)"
export GF_TEST_CERTS
bash "$ROOT/scripts/test-certs.sh" "$GF_TEST_CERTS"
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$GF_TEST_CERTS"' EXIT

step() { printf '\n== %s\n' "$*"; }

# run NAME COMMAND...: runs a step, records its failure, never stops the script.
run() {
    local name="$1"
    shift
    local t0=$SECONDS
    "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then
        echo "-- ok: $name ($((SECONDS - t0)) s)"
        return 0
    fi
    echo "-- FAILED: $name (exit $rc, $((SECONDS - t0)) s)"
    failed+=("$name")
    return 1
}

step "header compiles alone as C11 and as C++17"
run "header as C11" "$CC" -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c \
    "$GF_INCLUDE/grpc_failover.h"
run "header as C++17" "$CXX" -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ \
    "$GF_INCLUDE/grpc_failover.h"
run "C++ header alone" "$CXX" -std=c++17 -Wall -Wextra -Werror -pedantic -Wconversion -Wshadow \
    -fsyntax-only -x c++ -I "$GF_INCLUDE" "$GF_INCLUDE/grpc_failover.hpp"

step "build the test programs (shared and static)"
compile() { # compile NAME COMPILER FLAGS... : compiles once, links shared and static
    local name="$1" compiler="$2"
    shift 2
    "$compiler" "$@" -c -o "$OUT/$name.o" &&
        "$compiler" -pthread -o "$OUT/${name}_shared" "$OUT/$name.o" "${SHARED[@]}" &&
        "$compiler" -pthread -o "$OUT/${name}_static" "$OUT/$name.o" "${STATIC[@]}" &&
        ! readelf -d "$OUT/${name}_static" | grep -q "lib$LIB_NAME" &&
        readelf -d "$OUT/${name}_shared" | grep -q "lib$LIB_NAME"
}
build_ok=1
run "build C" compile test_api_c "$CC" "${CFLAGS[@]}" "$HERE/test_api.c" || build_ok=0
run "build C++" compile test_api_cpp "$CXX" "${CXXFLAGS[@]}" "$HERE/test_api.cpp" || build_ok=0
run "build C++ header" compile test_hpp "$CXX" "${CXXFLAGS[@]}" "$HERE/test_hpp.cpp" || build_ok=0

# The example of the README's C quick start, built exactly as the README shows.
step "examples/client.c"
example() {
    (cd "$ROOT" && "$CC" -I include examples/client.c -L target/release -lgrpc_failover \
        -o "$OUT/example_client") &&
        "$CC" -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -I "$GF_INCLUDE" \
            "$ROOT/examples/client.c" || return 1
    local log="$OUT/example_server.out" addr="" _
    "$GF_TESTSERVER" --listen 127.0.0.1:0 --name example >"$log" &
    server_pid=$!
    for _ in $(seq 100); do
        addr="$(sed -n 's/^listening //p' "$log")"
        [ -n "$addr" ] && break
        sleep 0.1
    done
    local reply rc
    reply="$(LD_LIBRARY_PATH="$LIB_DIR" "$OUT/example_client" "static:///$addr" "hello, C")"
    rc=$?
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=""
    echo "$reply"
    [ $rc -eq 0 ] && [ "$reply" = "reply: hello, C" ]
}
run "example client" example || true

if [ $build_ok = 1 ]; then
    # Full size, no memory checker. The static C run also uses a single runtime worker, so
    # callbacks that start calls or call back into the library share one thread.
    step "C, shared library"
    run "C shared" timeout -k 10 240 "$OUT/test_api_c_shared"
    step "C, static library, GF_WORKER_THREADS=1"
    run "C static" env GF_WORKER_THREADS=1 timeout -k 10 240 "$OUT/test_api_c_static"
    step "C++, shared library"
    run "C++ shared" timeout -k 10 240 "$OUT/test_api_cpp_shared"
    step "C++, static library"
    run "C++ static" timeout -k 10 240 "$OUT/test_api_cpp_static"
    step "grpc_failover.hpp, shared library"
    run "C++ header shared" timeout -k 10 240 "$OUT/test_hpp_shared"

    # The memory checker runs link a build of the library without mimalloc: valgrind and LSan
    # only see glibc's heap. The code is the same; only the allocator differs.
    memcheck_build() {
        if [ -n "${GF_MEMCHECK_LIBRARY:-}" ]; then
            MC_LIBRARY="$GF_MEMCHECK_LIBRARY"
        else
            MC_LIBRARY="$ROOT/target/memcheck/release/libgrpc_failover.so"
            (cd "$ROOT" && CARGO_TARGET_DIR=target/memcheck cargo build --release --lib \
                --no-default-features --quiet) || return 1
        fi
        local dir
        dir="$(cd "$(dirname "$MC_LIBRARY")" && pwd)"
        bash "$ROOT/scripts/soname-link.sh" "$dir" || return 1
        "$CC" -pthread -o "$OUT/test_api_c_mc_shared" "$OUT/test_api_c.o" -L "$dir" \
            -l"$LIB_NAME" -Wl,-rpath,"$dir" &&
            # shellcheck disable=SC2086 # a list of linker flags, split on purpose
            "$CXX" -pthread -o "$OUT/test_api_cpp_mc_static" "$OUT/test_api_cpp.o" \
                "${MC_LIBRARY%.so}.a" $GF_STATIC_LIBS
    }
    if [ "$GF_MEMCHECK" != none ]; then
        run "build for the memory checker" memcheck_build || GF_MEMCHECK=none
    fi
    # `env -u LD_LIBRARY_PATH`: the memcheck programs find their library by their run path; a
    # developer's LD_LIBRARY_PATH would swap in the mimalloc build, whose heap the checker
    # cannot see.
    memcheck_env=(-u LD_LIBRARY_PATH GF_TEST_SCALE="$GF_MEMCHECK_SCALE" GF_TEST_TIMEOUT_S=300)
    case "$GF_MEMCHECK" in
    valgrind)
        VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full
            --errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=40)
        if [ -s "$HERE/valgrind.supp" ]; then VALGRIND+=(--suppressions="$HERE/valgrind.supp"); fi
        step "C, shared library, under valgrind (GF_TEST_SCALE=$GF_MEMCHECK_SCALE)"
        run "C shared under valgrind" env "${memcheck_env[@]}" timeout -k 10 600 \
            "${VALGRIND[@]}" "$OUT/test_api_c_mc_shared"
        step "C++, static library, under valgrind (GF_TEST_SCALE=$GF_MEMCHECK_SCALE)"
        run "C++ static under valgrind" env "${memcheck_env[@]}" timeout -k 10 600 \
            "${VALGRIND[@]}" "$OUT/test_api_cpp_mc_static"
        ;;
    asan)
        step "C, shared library, ASan + LSan (GF_TEST_SCALE=$GF_MEMCHECK_SCALE)"
        asan_build() {
            "$CC" "${CFLAGS[@]}" -fsanitize=address -fno-omit-frame-pointer \
                -o "$OUT/test_api_c_asan" "$HERE/test_api.c" -L "$(dirname "$MC_LIBRARY")" \
                -l"$LIB_NAME" -Wl,-rpath,"$(cd "$(dirname "$MC_LIBRARY")" && pwd)"
        }
        run "build C with ASan" asan_build &&
            run "C shared under ASan" env "${memcheck_env[@]}" \
                ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
                timeout -k 10 600 "$OUT/test_api_c_asan"
        ;;
    none) echo "(memory checker skipped: GF_MEMCHECK=none)" ;;
    *)
        echo "GF_MEMCHECK must be valgrind, asan or none" >&2
        failed+=("GF_MEMCHECK")
        ;;
    esac

    # Sanitizers, at full size: the C program (shared) and the C++ program (static) built with
    # ASan and UBSan (any report fails), linked against the library built with the nightly
    # toolchain's -Zsanitizer=address and debug assertions (overflow checks and std's checks of
    # unsafe preconditions), so that ASan watches the Rust side of every call too. Without a
    # nightly toolchain the programs still run under ASan + UBSan, against the uninstrumented
    # library (which valgrind covers above).
    SAN_FLAGS=(-fsanitize=address,undefined -fno-sanitize-recover=undefined
        -fno-omit-frame-pointer)
    SAN_ENV=(-u LD_LIBRARY_PATH ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99
        UBSAN_OPTIONS=print_stacktrace=1 GF_TEST_TIMEOUT_S=300)
    sanitizer_build() {
        SAN_LIBRARY=""
        if [ "${GF_SANITIZERS:-auto}" != c-only ] && cargo +nightly --version >/dev/null 2>&1; then
            local host
            host="$(rustc -vV | sed -n 's/^host: //p')"
            (cd "$ROOT" && CARGO_TARGET_DIR=target/asan RUSTFLAGS="-Zsanitizer=address \
                -Cdebug-assertions=on -Coverflow-checks=on -Cforce-frame-pointers=yes" \
                cargo +nightly build --release --lib --no-default-features --quiet \
                --target "$host") || return 1
            SAN_LIBRARY="$ROOT/target/asan/$host/release/libgrpc_failover.so"
            echo "library: built with -Zsanitizer=address and debug assertions ($SAN_LIBRARY)"
        else
            [ -n "${MC_LIBRARY:-}" ] || memcheck_build || return 1
            SAN_LIBRARY="$MC_LIBRARY"
            echo "library: uninstrumented (no nightly toolchain, or GF_SANITIZERS=c-only): $SAN_LIBRARY"
        fi
        local dir
        dir="$(cd "$(dirname "$SAN_LIBRARY")" && pwd)"
        bash "$ROOT/scripts/soname-link.sh" "$dir" || return 1
        "$CC" "${CFLAGS[@]}" "${SAN_FLAGS[@]}" -o "$OUT/test_api_c_san_shared" \
            "$HERE/test_api.c" -L "$dir" -l"$LIB_NAME" -Wl,-rpath,"$dir" &&
            # shellcheck disable=SC2086 # a list of linker flags, split on purpose
            "$CXX" "${CXXFLAGS[@]}" "${SAN_FLAGS[@]}" -o "$OUT/test_api_cpp_san_static" \
                "$HERE/test_api.cpp" "${SAN_LIBRARY%.so}.a" $GF_STATIC_LIBS &&
            # shellcheck disable=SC2086 # a list of linker flags, split on purpose
            "$CXX" "${CXXFLAGS[@]}" "${SAN_FLAGS[@]}" -o "$OUT/test_hpp_san_static" \
                "$HERE/test_hpp.cpp" "${SAN_LIBRARY%.so}.a" $GF_STATIC_LIBS
    }
    if [ "${GF_SANITIZERS:-auto}" = off ]; then
        echo "(sanitizers skipped: GF_SANITIZERS=off)"
    else
        step "sanitizers: C (shared) and C++ (static) under ASan + UBSan"
        if run "build for the sanitizers" sanitizer_build; then
            run "C shared under ASan + UBSan" env "${SAN_ENV[@]}" timeout -k 10 600 \
                "$OUT/test_api_c_san_shared"
            run "C++ static under ASan + UBSan" env "${SAN_ENV[@]}" timeout -k 10 600 \
                "$OUT/test_api_cpp_san_static"
            run "C++ header (static) under ASan + UBSan" env "${SAN_ENV[@]}" timeout -k 10 600 \
                "$OUT/test_hpp_san_static"
        fi
    fi
fi

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "tests/c: all passed ($((SECONDS - started)) s)"
    exit 0
fi
printf 'tests/c: FAILED: %s (%d s)\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" \
    "$((SECONDS - started))"
exit 1
