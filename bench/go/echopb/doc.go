// Package echopb holds the stubs of tests/proto/echo.proto that gobench calls through. Nothing
// generated is committed: gen.sh (run by bench/go/run.sh, or go generate) writes echo.pb.go and
// echo_grpc.pb.go here with protoc, protoc-gen-go and protoc-gen-go-grpc.
package echopb

//go:generate bash gen.sh
