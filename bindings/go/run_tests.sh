#!/usr/bin/env bash
# The Go binding's tests (make test-go): gofmt and go vet, then go test in each of its modules
# (the binding, grpcstatus, grpcconn, interop, prometheus) normally and under -race, and the
# binding's tests in the GC stress mode, which collects garbage around every cgo call to catch
# a missing runtime.KeepAlive. Needs make build first; the tests start their own etcd and gf-testserver
# processes. grpcconn's tests call through stubs generated here first from tests/proto/echo.proto
# (protoc, and the Go plugins built with go install); nothing generated is committed.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
export GF_TESTSERVER=${GF_TESTSERVER:-$root/target/release/gf-testserver}
if [ ! -x "$GF_TESTSERVER" ] || [ ! -e "$root/target/release/libgrpc_failover.so" ]; then
    echo "run_tests.sh: the library or gf-testserver is missing: run make build first" >&2
    exit 1
fi
for tool in go etcd etcdctl; do
    command -v "$tool" >/dev/null || { echo "run_tests.sh: $tool not found (Go 1.22+; make deps installs etcd)" >&2; exit 1; }
done
modules=(. grpcstatus grpcconn interop prometheus)

run() {
    echo "+ $*"
    "$@"
}

run bash grpcconn/internal/echopb/gen.sh

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
    echo "gofmt: these files need formatting:" >&2
    echo "$unformatted" >&2
    exit 1
fi

for m in "${modules[@]}"; do
    (cd "$m" && run go vet ./... && run go vet -tags grpcfailover_gcstress ./...)
done
for m in "${modules[@]}"; do
    (cd "$m" && run go test -count=1 -timeout 120s ./...)
done
# A call with no other in flight waits on its own thread, one that overlaps others waits for the
# dispatcher goroutine: run the binding's suite once more with every call on the dispatcher.
run env GRPCFAILOVER_TEST_DISPATCHER_ONLY=1 go test -count=1 -timeout 120s .
for m in "${modules[@]}"; do
    (cd "$m" && run go test -count=1 -timeout 180s -race ./...)
done
# cgocheck2 also checks every pointer write for Go pointers stored in C memory.
run env GOEXPERIMENT=cgocheck2 go test -count=1 -timeout 180s -tags grpcfailover_gcstress ./...
echo "go binding: all tests passed"
