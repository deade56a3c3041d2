package grpcfailover_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

func TestRegisterAndDiscoverThroughEtcd(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := testenv.StartServer(t, "a")
	b := testenv.StartServer(t, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	regA, err := grpcfailover.Register(ctx, "service/user", a.Addr, map[string]any{"weight": 10}, 5*time.Second,
		grpcfailover.WithEtcd(etcd.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	defer regA.Close()
	regB, err := grpcfailover.Register(ctx, "service/user/", b.Addr, nil, 5*time.Second, grpcfailover.WithEtcd(etcd.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	defer regB.Close()
	// A neighbouring prefix must not leak into service/user.
	etcd.Put(t, "service/user2/127.0.0.1:1", `{"Op":0,"Addr":"127.0.0.1:1","Metadata":null}`)

	if regA.Key() != "service/user/"+a.Addr || regB.Key() != "service/user/"+b.Addr {
		t.Fatalf("keys %q, %q", regA.Key(), regB.Key())
	}
	value, ok := etcd.Get(t, regA.Key())
	var record struct {
		Op       int
		Addr     string
		Metadata map[string]any
	}
	if !ok || json.Unmarshal([]byte(value), &record) != nil || record.Op != 0 || record.Addr != a.Addr || record.Metadata["weight"] != 10.0 {
		t.Fatalf("record of %s = %q, want the naming/endpoints format with weight 10", regA.Key(), value)
	}
	if value, _ := etcd.Get(t, regB.Key()); value != `{"Op":0,"Addr":"`+b.Addr+`","Metadata":null}` {
		t.Fatalf("record without metadata = %q", value)
	}

	c := dial(t, "etcd:///service/user", grpcfailover.WithEtcd(etcd.Endpoint), grpcfailover.WithServiceConfig(roundRobin))
	seen := map[string]bool{}
	if !testenv.Eventually(10*time.Second, func() bool {
		seen[whoami(t, c)] = true
		return seen["a"] && seen["b"]
	}) {
		t.Fatalf("calls reached only %v", seen)
	}
	if st, err := c.Stats(); err != nil || len(st.Instances) != 2 {
		t.Fatalf("instances %+v, %v: want exactly the two under service/user/", st, err)
	}

	if err := regA.Close(); err != nil {
		t.Fatal(err)
	}
	if err := regA.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := etcd.Get(t, regA.Key()); ok {
		t.Fatal("the key is still in etcd after Close")
	}
	// Once the client has seen the delete, every call goes to b.
	if !testenv.Eventually(10*time.Second, func() bool {
		st, err := c.Stats()
		return err == nil && len(st.Instances) == 1
	}) {
		t.Fatal("the client did not drop the deregistered instance")
	}
	for i := 0; i < 10; i++ {
		if got := whoami(t, c); got != "b" {
			t.Fatalf("call %d went to %q after a was deregistered", i, got)
		}
	}
}

func TestRegisterFailures(t *testing.T) {
	port := testenv.FreePort(t) // nothing listens there
	ctx := context.Background()
	start := time.Now()
	_, err := grpcfailover.Register(ctx, "svc", "127.0.0.1:8090", nil, 5*time.Second,
		grpcfailover.WithEtcd("127.0.0.1:"+strconv.Itoa(port)), grpcfailover.WithEtcdDialTimeout(300*time.Millisecond))
	if grpcfailover.CodeOf(err) != grpcfailover.Unavailable {
		t.Fatalf("unreachable etcd: %v, want Unavailable", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("giving up took %v", elapsed)
	}

	// The context's deadline bounds the wait too.
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = grpcfailover.Register(dctx, "svc", "127.0.0.1:8090", nil, 5*time.Second, grpcfailover.WithEtcd("127.0.0.1:"+strconv.Itoa(port)))
	if code := grpcfailover.CodeOf(err); code != grpcfailover.Unavailable && code != grpcfailover.DeadlineExceeded {
		t.Fatalf("unreachable etcd with a deadline: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("giving up took %v with a 300 ms deadline", elapsed)
	}

	cctx, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if _, err := grpcfailover.Register(cctx, "svc", "127.0.0.1:8090", nil, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	if _, err := grpcfailover.Register(ctx, "svc", "127.0.0.1:8090", nil, 0); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("ttl 0: %v, want InvalidArgument", err)
	}
	if _, err := grpcfailover.Register(ctx, "svc", "not an address", nil, time.Second); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("bad addr: %v, want InvalidArgument", err)
	}
	if _, err := grpcfailover.Register(ctx, "svc", "127.0.0.1:1", map[string]any{"f": func() {}}, time.Second); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("metadata that is not JSON: %v, want InvalidArgument", err)
	}
}
