#!/usr/bin/env bash
# The chaos test (bounded: 30 s of chaos, 60 s at most in all).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIB=$PWD/target/release
gcc -O2 -std=c11 -Wall -Wextra -Werror -I include tests/chaos/chaos.c -L "$LIB" -lgrpc_failover -lpthread \
    -Wl,-rpath,"$LIB" -o "$LIB/gf-chaos"
timeout 60 "$LIB/gf-chaos" "$LIB/gf-testserver" "${GF_CHAOS_SECONDS:-30}"
