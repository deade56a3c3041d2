//go:build grpcfailover_pkgconfig

package grpcfailover

// Links an installed library through pkg-config (make install writes grpc_failover.pc).

// #cgo pkg-config: grpc_failover
import "C"
