// Package interop holds the interop tests of the Go binding against etcd's and grpc-go's own
// Go code: etcd's naming/endpoints manager and resolver, and grpc-go clients.
package interop
