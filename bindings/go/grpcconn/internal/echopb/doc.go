// Package echopb holds the stubs of tests/proto/echo.proto that the grpcconn tests call through.
// Nothing generated is committed: gen.sh (run by bindings/go/run_tests.sh, or go generate)
// writes echo.pb.go and echo_grpc.pb.go here with protoc, protoc-gen-go and protoc-gen-go-grpc.
package echopb

//go:generate bash gen.sh
