#!/usr/bin/env bash
# The README's C and C++ code blocks and examples/*.c compile as written, the README's C and
# C++ examples run against a gf-testserver, and both build against what `make install` installs,
# through pkg-config and through CMake's find_package; the SONAME and `make uninstall` hold.
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=$PWD/target/release
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"; [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null || true' EXIT

python3 - "$TMP" <<'PY'
import re, sys
text = open("README.md").read()
for i, (lang, body) in enumerate(re.findall(r"```(c|cpp)\n(.*?)```", text, re.S)):
    if "int main" in body:
        open(f"{sys.argv[1]}/readme_{i}.{lang}", "w").write(body)
PY
n=0
for f in "$TMP"/readme_*.c examples/*.c; do
    [ -e "$f" ] || continue
    gcc -std=c11 -Wall -Wextra -Werror -I include "$f" -L "$LIB" -lgrpc_failover -lpthread -Wl,-rpath,"$LIB" -o "$TMP/$(basename "$f").bin"
    n=$((n + 1))
done
for f in "$TMP"/readme_*.cpp; do
    [ -e "$f" ] || continue
    g++ -std=c++17 -Wall -Wextra -Werror -I include "$f" -L "$LIB" -lgrpc_failover -lpthread -Wl,-rpath,"$LIB" -o "$TMP/$(basename "$f").bin"
    n=$((n + 1))
done

# Run the README's C and C++ examples against a real server.
OUT=$TMP/server.out
"$LIB/gf-testserver" --listen 127.0.0.1:0 --name readme >"$OUT" &
SERVER=$!
for _ in $(seq 100); do grep -q '^listening' "$OUT" && break; sleep 0.05; done
ADDR=$(sed -n 's/^listening //p' "$OUT")
for bin in "$TMP"/readme_*.c.bin; do
    "$bin" "static:///$ADDR" | grep -q '^reply: hello$'
done
for bin in "$TMP"/readme_*.cpp.bin; do
    out=$("$bin" "static:///$ADDR")
    grep -q '^reply: hello (trailer echoed)$' <<<"$out"
    grep -q '^async, then UNIMPLEMENTED' <<<"$out"
done
# `make install` gives a library, header and pkg-config file that a program builds against.
make -s install PREFIX="$TMP/prefix" >/dev/null
export PKG_CONFIG_PATH=$TMP/prefix/lib/pkgconfig
gcc -std=c11 -Wall -Werror examples/client.c $(pkg-config --cflags --libs grpc_failover) \
    -Wl,-rpath,"$TMP/prefix/lib" -o "$TMP/installed-client"
"$TMP/installed-client" "static:///$ADDR" pkg | grep -q '^reply: pkg$'
gcc -std=c11 -Wall -Werror examples/client.c -I "$TMP/prefix/include" "$TMP/prefix/lib/libgrpc_failover.a" \
    -lpthread -ldl -lm -o "$TMP/static-client"
"$TMP/static-client" "static:///$ADDR" static | grep -q '^reply: static$'
# The C++ header from the installed prefix, with the same pkg-config flags.
cpp_readme=$(ls "$TMP"/readme_*.cpp | head -1)
g++ -std=c++17 -Wall -Werror "$cpp_readme" $(pkg-config --cflags --libs grpc_failover) \
    -Wl,-rpath,"$TMP/prefix/lib" -o "$TMP/installed-cpp"
"$TMP/installed-cpp" "static:///$ADDR" | grep -q '^reply: hello (trailer echoed)$'

# The SONAME: the installed library answers to libgrpc_failover.so.<major>, the name programs
# linked against it record, and that name and the development link resolve to the real file.
lib=$TMP/prefix/lib
soname=$(readelf -d "$lib/libgrpc_failover.so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[[ $soname =~ ^libgrpc_failover\.so\.[0-9]+$ ]] || { echo "examples: SONAME is '$soname'" >&2; exit 1; }
[ "$(readlink -f "$lib/$soname")" = "$(readlink -f "$lib/libgrpc_failover.so")" ]
[ -f "$(readlink -f "$lib/$soname")" ] && [ ! -L "$lib/libgrpc_failover.so.$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ]
readelf -d "$TMP/installed-client" | grep -q "(NEEDED).*\[$soname\]"
# Installed stripped: no debug sections, and within issue 20's 8 MB.
if readelf -S "$lib/$soname" | grep -q '\.debug_'; then
    echo "examples: the installed library still has debug sections" >&2; exit 1
fi
size=$(stat -L -c %s "$lib/$soname")
echo "installed libgrpc_failover.so: $size bytes"
[ "$size" -le 8000000 ] || { echo "examples: the installed library is $size bytes, over 8 MB" >&2; exit 1; }

# CMake: find_package(grpc_failover CONFIG) against the prefix, the shared and the static
# imported targets, and the C++ header.
cmake -S tests/cmake -B "$TMP/cmake" -DCMAKE_PREFIX_PATH="$TMP/prefix" -DGF_SOURCE_DIR="$PWD" \
    -DGF_CPP_SOURCE="$cpp_readme" >"$TMP/cmake.log" 2>&1 || { cat "$TMP/cmake.log" >&2; exit 1; }
cmake --build "$TMP/cmake" >>"$TMP/cmake.log" 2>&1 || { cat "$TMP/cmake.log" >&2; exit 1; }
"$TMP/cmake/client_shared" "static:///$ADDR" cmake | grep -q '^reply: cmake$'
"$TMP/cmake/client_static" "static:///$ADDR" cmake-static | grep -q '^reply: cmake-static$'
if readelf -d "$TMP/cmake/client_static" | grep -q 'libgrpc_failover'; then
    echo "examples: client_static links the shared library" >&2; exit 1
fi
"$TMP/cmake/cpp_client" "static:///$ADDR" | grep -q '^reply: hello (trailer echoed)$'
# A version the install cannot satisfy is refused.
mkdir -p "$TMP/cmake-too-new"
printf 'cmake_minimum_required(VERSION 3.10)\nproject(x C)\nfind_package(grpc_failover 99 CONFIG REQUIRED)\n' \
    >"$TMP/cmake-too-new/CMakeLists.txt"
if cmake -S "$TMP/cmake-too-new" -B "$TMP/cmake-too-new/build" -DCMAKE_PREFIX_PATH="$TMP/prefix" >/dev/null 2>&1; then
    echo "examples: find_package(grpc_failover 99) accepted version $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml)" >&2; exit 1
fi

# make uninstall removes every file make install put there.
make -s uninstall PREFIX="$TMP/prefix" >/dev/null
left=$(find "$TMP/prefix" -not -type d)
[ -z "$left" ] || { echo "examples: make uninstall left: $left" >&2; exit 1; }
n=$((n + 7))
passed=$n
echo "examples: $passed passed, 0 failed"
