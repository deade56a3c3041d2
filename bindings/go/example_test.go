package grpcfailover_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	grpcfailover "grpc-failover/bindings/go"
)

// Calls the instances registered under service/user in etcd, with the reference failover config:
// round_robin, and up to 4 attempts on UNAVAILABLE, each retry on another instance.
func ExampleDial() {
	const failoverJSON = `{
	  "loadBalancingConfig": [{"round_robin": {}}],
	  "methodConfig": [{
	    "name": [{"service": "UserService"}],
	    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
	                    "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}
	  }]
	}`
	c, err := grpcfailover.Dial("etcd:///service/user",
		grpcfailover.WithEtcd("127.0.0.1:2379"), grpcfailover.WithServiceConfig(failoverJSON))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	reply, err := c.Invoke(ctx, "/UserService/GetById", []byte("serialized request"))
	var se *grpcfailover.StatusError
	if errors.As(err, &se) {
		log.Fatalf("GetById: code %v: %s", se.Code(), se.Message())
	}
	fmt.Printf("%d bytes\n", len(reply))
}

// A service registers its address in etcd, where etcd:/// clients of this package and grpc-go
// clients with etcd's resolver find it, until Close.
func ExampleRegister() {
	reg, err := grpcfailover.Register(context.Background(), "service/user", "127.0.0.1:8090",
		map[string]any{"weight": 10}, 5*time.Second, grpcfailover.WithEtcd("127.0.0.1:2379"))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	// ... serve on 127.0.0.1:8090 ...
}
