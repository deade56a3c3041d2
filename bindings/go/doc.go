// Package grpcfailover is the Go binding of grpc-failover: a gRPC client with discovery of
// instances in etcd, weighted load balancing, and retries that move a failed call to a healthy
// instance, configured with the same service config JSON as grpc-go.
//
//	c, err := grpcfailover.Dial("etcd:///service/user",
//		grpcfailover.WithEtcd("127.0.0.1:2379"), grpcfailover.WithServiceConfig(failoverJSON))
//	defer c.Close()
//	reply, err := c.Invoke(ctx, "/UserService/GetById", req)
//
// Calls carry serialized messages ([]byte) in and out; marshal them with the protobuf package
// of your choice. Errors are *StatusError values with grpc-go's code numbering; the grpcstatus
// subpackage converts them for grpc-go's status package.
//
// The package links libgrpc_failover through cgo. Built inside the repository it uses
// target/release (run make build first); for an installed library build with
// -tags grpcfailover_pkgconfig, or point CGO_CFLAGS and CGO_LDFLAGS at it.
package grpcfailover
