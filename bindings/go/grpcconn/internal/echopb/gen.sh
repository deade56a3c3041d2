#!/usr/bin/env bash
# Generates echo.pb.go and echo_grpc.pb.go in this directory from tests/proto/echo.proto, with
# protoc (make deps installs protobuf-compiler) and the two Go plugins, which go install builds
# into a temporary directory. The output is ignored by git; bindings/go/run_tests.sh runs this
# before the tests.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../../../../.. && pwd)
command -v protoc >/dev/null || { echo "gen.sh: protoc not found (make deps installs protobuf-compiler)" >&2; exit 1; }
# protoc-gen-go at the version of google.golang.org/protobuf in grpcconn's go.mod: generated code
# refuses a runtime older than its generator. protoc-gen-go-grpc v1.6 emits code for grpc-go
# 1.64 and newer (SupportPackageIsVersion9).
protobuf_version=$(cd ../.. && go list -m -f '{{.Version}}' google.golang.org/protobuf)
grpc_plugin_version=v1.6.1
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$protobuf_version"
GOBIN=$bin go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$grpc_plugin_version"
PATH=$bin:$PATH protoc -I "$root/tests/proto" \
    --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    echo.proto
