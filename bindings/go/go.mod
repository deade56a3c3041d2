module grpc-failover/bindings/go

go 1.22
