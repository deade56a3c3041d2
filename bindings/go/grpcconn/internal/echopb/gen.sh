#!/usr/bin/env bash
# Generates echo.pb.go and echo_grpc.pb.go from tests/proto/echo.proto, with protoc (make deps
# installs protobuf-compiler) and the two Go plugins, which go install builds into a temporary
# directory. The output is ignored by git; bindings/go/run_tests.sh runs this before the tests.
#
# Usage: gen.sh [OUT_DIR GO_PACKAGE]: by default into this directory as the proto's go_package;
# bench/go/echopb/gen.sh passes its own directory and package (a module outside grpcconn may
# not import this internal one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../../.." && pwd)
out=$(cd "${1:-$here}" && pwd)
package_opts=()
if [ -n "${2:-}" ]; then
    package_opts=(--go_opt="Mecho.proto=$2" --go-grpc_opt="Mecho.proto=$2")
fi
command -v protoc >/dev/null || { echo "gen.sh: protoc not found (make deps installs protobuf-compiler)" >&2; exit 1; }
# protoc-gen-go at the version of google.golang.org/protobuf in the output's go.mod: generated
# code refuses a runtime older than its generator. protoc-gen-go-grpc v1.6 emits code for
# grpc-go 1.64 and newer (SupportPackageIsVersion9).
protobuf_version=$(cd "$out" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
grpc_plugin_version=v1.6.1
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$protobuf_version"
GOBIN=$bin go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$grpc_plugin_version"
cd "$out"
PATH=$bin:$PATH protoc -I "$root/tests/proto" \
    --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    "${package_opts[@]}" echo.proto
