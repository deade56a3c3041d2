#!/usr/bin/env bash
# The README's C and C++ code blocks and examples/*.c compile as written, the README's C and
# C++ examples run against a gf-testserver, and both build against what `make install` installs.
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
n=$((n + 3))
passed=$n
echo "examples: $passed passed, 0 failed"
