package interop_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

// rawCodec hands []byte messages to grpc-go unchanged, as grpcfailover does.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "raw" }

func etcdClient(t *testing.T, etcd *testenv.Etcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Instances that a Go service registered with etcd's own endpoints.Manager are found, with
// their weights, and served 1:2 under weighted_round_robin.
func TestEndpointsManagerInstancesSplitByWeight(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cli := etcdClient(t, etcd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := testenv.StartServer(t, "a")
	b := testenv.StartServer(t, "b")
	em, err := endpoints.NewManager(cli, "service/user")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		addr   string
		weight int
	}{{a.Addr, 10}, {b.Addr, 20}} {
		ep := endpoints.Endpoint{Addr: s.addr, Metadata: map[string]any{"weight": s.weight}}
		if err := em.AddEndpoint(ctx, "service/user/"+s.addr, ep); err != nil {
			t.Fatal(err)
		}
	}

	c, err := grpcfailover.Dial("etcd:///service/user", grpcfailover.WithEtcd(etcd.Endpoint),
		grpcfailover.WithServiceConfig(`{"loadBalancingConfig":[{"weighted_round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	whoami := func() string {
		reply, err := c.Invoke(ctx, "/UserService/Whoami", nil)
		if err != nil {
			t.Fatal(err)
		}
		return string(reply)
	}
	weights := map[string]float64{}
	if !testenv.Eventually(10*time.Second, func() bool {
		whoami()
		st, err := c.Stats()
		if err != nil || len(st.Instances) != 2 {
			return false
		}
		for _, in := range st.Instances {
			if in.State != "READY" {
				return false
			}
			weights[in.Address] = in.Weight
		}
		return true
	}) {
		t.Fatal("the two instances did not both become ready")
	}
	if weights[a.Addr] != 10 || weights[b.Addr] != 20 {
		t.Fatalf("weights %v, want %s=10 and %s=20", weights, a.Addr, b.Addr)
	}

	counts := map[string]int{}
	for i := 0; i < 300; i++ {
		counts[whoami()]++
	}
	t.Logf("300 calls went %v", counts)
	if counts["a"] < 90 || counts["a"] > 110 || counts["a"]+counts["b"] != 300 {
		t.Fatalf("300 calls went %v, want about a=100 b=200", counts)
	}
}

// serveGRPCGo runs a grpc-go server that answers every method with raw bytes: Whoami with its
// name, anything else with the request.
func serveGRPCGo(t *testing.T, name string) string {
	t.Helper()
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(stream)
			var req []byte
			if err := stream.RecvMsg(&req); err != nil {
				return err
			}
			if strings.HasSuffix(method, "/Whoami") {
				req = []byte(name)
			}
			return stream.SendMsg(req)
		}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// A Go service that registers itself with grpcfailover.Register is found by grpc-go's own etcd
// resolver, with its metadata, and served to a grpc-go client (and to a grpcfailover client);
// Close takes it away from both.
func TestRegisteredInstanceServedToGRPCGo(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cli := etcdClient(t, etcd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := serveGRPCGo(t, "order-1")

	reg, err := grpcfailover.Register(ctx, "service/order", addr, map[string]any{"weight": 5}, 5*time.Second,
		grpcfailover.WithEtcd(etcd.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	em, err := endpoints.NewManager(cli, "service/order")
	if err != nil {
		t.Fatal(err)
	}
	list, err := em.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep, ok := list["service/order/"+addr]
	if md, _ := ep.Metadata.(map[string]any); !ok || len(list) != 1 || ep.Addr != addr || md["weight"] != 5.0 {
		t.Fatalf("endpoints.Manager lists %+v", list)
	}

	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("etcd:///service/order", grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var reply []byte
	if err := conn.Invoke(ctx, "/OrderService/Whoami", []byte{}, &reply, grpc.ForceCodecV2(rawCodec{}), grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	if string(reply) != "order-1" {
		t.Fatalf("grpc-go's call answered %q", reply)
	}

	c, err := grpcfailover.Dial("etcd:///service/order", grpcfailover.WithEtcd(etcd.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if reply, err := c.Invoke(ctx, "/OrderService/Echo", []byte("ping"), grpcfailover.WaitForReady(true)); err != nil || string(reply) != "ping" {
		t.Fatalf("grpcfailover's call to the grpc-go server: %q, %v", reply, err)
	}

	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		err := conn.Invoke(short, "/OrderService/Whoami", []byte{}, &reply, grpc.ForceCodecV2(rawCodec{}))
		return status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded
	}) {
		t.Fatal("grpc-go still reaches the instance after Close")
	}
	if !testenv.Eventually(10*time.Second, func() bool {
		_, err := c.Invoke(ctx, "/OrderService/Echo", nil, grpcfailover.WaitForReady(false))
		return grpcfailover.CodeOf(err) == grpcfailover.Unavailable
	}) {
		t.Fatal("grpcfailover still reaches the instance after Close")
	}
}
