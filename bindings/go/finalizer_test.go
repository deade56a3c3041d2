//go:build !grpcfailover_gcstress

package grpcfailover_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

// A registration nobody closes is deregistered by its finalizer, long before its lease would
// expire.
func TestForgottenRegistrationIsDeregistered(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	key := func() string {
		reg, err := grpcfailover.Register(context.Background(), "forgotten", "127.0.0.1:7", nil, time.Minute, grpcfailover.WithEtcd(etcd.Endpoint))
		if err != nil {
			t.Fatal(err)
		}
		return reg.Key()
	}()
	if _, ok := etcd.Get(t, key); !ok {
		t.Fatal("not registered")
	}
	if !testenv.Eventually(10*time.Second, func() bool {
		runtime.GC()
		_, ok := etcd.Get(t, key)
		return !ok
	}) {
		t.Fatal("the forgotten registration is still in etcd")
	}
}
