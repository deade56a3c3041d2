#!/usr/bin/env bash
# Generates the echo stubs here as package grpc-failover/bench/go/echopb, with the generator the
# grpcconn tests use (the proto's go_package is grpcconn's internal one, which this module may
# not import). The output is ignored by git; bench/go/run.sh runs this before the build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../../../bindings/go/grpcconn/internal/echopb/gen.sh" "$here" grpc-failover/bench/go/echopb
