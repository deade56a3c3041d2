module grpc-failover/bindings/go/grpcstatus

go 1.22

require (
	google.golang.org/grpc v1.70.0
	grpc-failover/bindings/go v0.0.0
)

require (
	golang.org/x/sys v0.28.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20241202173237-19429a94021a // indirect
	google.golang.org/protobuf v1.35.2 // indirect
)

replace grpc-failover/bindings/go => ../
