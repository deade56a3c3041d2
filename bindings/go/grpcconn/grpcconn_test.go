package grpcconn_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/grpcconn"
	"grpc-failover/bindings/go/grpcconn/internal/echopb"
	"grpc-failover/bindings/go/internal/testenv"
)

func dial(t *testing.T, target string, opts ...grpcfailover.Option) *grpcconn.ClientConn {
	t.Helper()
	conn, err := grpcconn.Dial(target, opts...)
	if err != nil {
		t.Fatalf("Dial(%q): %v", target, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode checks that grpc-go's status.FromError reads code from err.
func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	s, ok := status.FromError(err)
	if !ok || s.Code() != code {
		t.Fatalf("status.FromError(%v) = %v, %v; want code %v", err, s.Code(), ok, code)
	}
	return s
}

func TestProtoRoundTrip(t *testing.T) {
	s := testenv.StartServer(t, "s")
	client := echopb.NewEchoerClient(dial(t, "static:///"+s.Addr))

	req := &echopb.EchoRequest{Text: "héllo", Number: -42, Blob: []byte{0, 1, 0xff}}
	reply, err := client.Echo(timeout(t), req)
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if reply.Text != req.Text || reply.Number != req.Number || !bytes.Equal(reply.Blob, req.Blob) {
		t.Fatalf("Echo(%v) = %v: want the same fields back", req, reply)
	}

	empty, err := client.Echo(timeout(t), &echopb.EchoRequest{})
	if err != nil || !proto.Equal(empty, &echopb.EchoReply{}) {
		t.Fatalf("Echo(empty) = %v, %v", empty, err)
	}
}

func TestMetadataHeaderAndTrailer(t *testing.T) {
	s := testenv.StartServer(t, "s")
	client := echopb.NewEchoerClient(dial(t, "static:///"+s.Addr))

	ctx := metadata.NewOutgoingContext(timeout(t), metadata.Pairs("x-echo-user", "alice", "x-other", "1"))
	ctx = metadata.AppendToOutgoingContext(ctx, "x-echo-raw-bin", "\x00\xff", "x-echo-user", "bob")
	var header, trailer metadata.MD
	if _, err := client.Echo(ctx, &echopb.EchoRequest{Text: "m"}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if got := trailer.Get("x-echo-user"); len(got) != 2 || got[0] != "alice" || got[1] != "bob" {
		t.Fatalf("trailer %v: want x-echo-user alice, bob echoed", trailer)
	}
	if got := trailer.Get("x-echo-raw-bin"); len(got) != 1 || got[0] != "\x00\xff" {
		t.Fatalf("trailer %v: want the binary x-echo-raw-bin echoed", trailer)
	}
	if got := trailer.Get("x-other"); len(got) != 0 {
		t.Fatalf("trailer %v: only x-echo-* keys come back", trailer)
	}
	if header == nil {
		t.Fatal("grpc.Header(&md) left md nil")
	}

	// The keys grpc-go keeps for itself are not sent, as with grpc-go, rather than failing.
	ctx = metadata.AppendToOutgoingContext(timeout(t), "user-agent", "x", "grpc-timeout", "1S", "x-echo-ok", "1")
	trailer = nil
	if _, err := client.Echo(ctx, &echopb.EchoRequest{}, grpc.Trailer(&trailer)); err != nil {
		t.Fatalf("Echo with reserved keys: %v", err)
	}
	if got := trailer.Get("x-echo-ok"); len(got) != 1 {
		t.Fatalf("trailer %v: want x-echo-ok echoed", trailer)
	}
}

func TestTrailerOfFailedCall(t *testing.T) {
	s := testenv.StartServer(t, "s")
	client := echopb.NewEchoerClient(dial(t, "static:///"+s.Addr))

	ctx := metadata.AppendToOutgoingContext(timeout(t), "x-echo-id", "7")
	var trailer metadata.MD
	_, err := client.Missing(ctx, &echopb.EchoRequest{}, grpc.Trailer(&trailer))
	wantCode(t, err, codes.Unimplemented)
	if got := trailer.Get("x-echo-id"); len(got) != 1 || got[0] != "7" {
		t.Fatalf("trailer %v of the failed call: want x-echo-id echoed", trailer)
	}
}

func TestStatusCodes(t *testing.T) {
	s := testenv.StartServer(t, "s")
	notFound := testenv.StartServer(t, "nf", "--fail-rate", "1", "--fail-code", "5")

	_, err := echopb.NewEchoerClient(dial(t, "static:///"+s.Addr)).Missing(timeout(t), &echopb.EchoRequest{})
	wantCode(t, err, codes.Unimplemented)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("status.Code(%v) = %v", err, status.Code(err))
	}

	_, err = echopb.NewEchoerClient(dial(t, "static:///"+notFound.Addr)).Echo(timeout(t), &echopb.EchoRequest{})
	st := wantCode(t, err, codes.NotFound)
	if !strings.Contains(st.Message(), "injected failure") {
		t.Fatalf("message %q: want the server's", st.Message())
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	slow := testenv.StartServer(t, "slow", "--delay-ms", "5000")
	client := echopb.NewEchoerClient(dial(t, "static:///"+slow.Addr))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := client.Echo(ctx, &echopb.EchoRequest{})
	wantCode(t, err, codes.DeadlineExceeded)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v: want errors.Is context.DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = client.Echo(ctx, &echopb.EchoRequest{})
	wantCode(t, err, codes.Canceled)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v: want errors.Is context.Canceled", err)
	}

	// Already over: the call does not start.
	_, err = client.Echo(ctx, &echopb.EchoRequest{})
	wantCode(t, err, codes.Canceled)
}

func TestWaitForReady(t *testing.T) {
	// Nothing listens on the port: failing fast is Unavailable, waiting for a ready instance
	// lasts until the deadline.
	conn := dial(t, "static:///127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)))
	client := echopb.NewEchoerClient(conn)

	_, err := client.Echo(timeout(t), &echopb.EchoRequest{}, grpc.WaitForReady(false))
	wantCode(t, err, codes.Unavailable)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = client.Echo(ctx, &echopb.EchoRequest{}, grpc.WaitForReady(true))
	wantCode(t, err, codes.DeadlineExceeded)
}

func TestNewStreamIsUnimplemented(t *testing.T) {
	s := testenv.StartServer(t, "s")
	client := echopb.NewEchoerClient(dial(t, "static:///"+s.Addr))

	_, err := client.ServerStream(timeout(t), &echopb.EchoRequest{})
	wantCode(t, err, codes.Unimplemented)
	_, err = client.ClientStream(timeout(t))
	wantCode(t, err, codes.Unimplemented)
	_, err = client.Bidi(timeout(t))
	wantCode(t, err, codes.Unimplemented)
}

// upperCodec is a codec of plain strings that sends them upper-cased, so a test sees that it
// marshaled.
type upperCodec struct{}

func (upperCodec) Marshal(v any) ([]byte, error) {
	return []byte(strings.ToUpper(*v.(*string))), nil
}

func (upperCodec) Unmarshal(data []byte, v any) error {
	*v.(*string) = string(data)
	return nil
}

func (upperCodec) Name() string { return "upper" }

func init() { encoding.RegisterCodec(upperCodec{}) }

func TestCodecs(t *testing.T) {
	s := testenv.StartServer(t, "s")
	conn := dial(t, "static:///"+s.Addr)

	for name, opt := range map[string]grpc.CallOption{
		"ForceCodec":         grpc.ForceCodec(upperCodec{}),
		"CallContentSubtype": grpc.CallContentSubtype("Upper"),
	} {
		req, reply := "abc", ""
		if err := conn.Invoke(timeout(t), "/x.Y/Echo", &req, &reply, opt); err != nil || reply != "ABC" {
			t.Fatalf("%s: Invoke = %q, %v; want ABC", name, reply, err)
		}
	}

	req, reply := "abc", ""
	err := conn.Invoke(timeout(t), "/x.Y/Echo", &req, &reply, grpc.CallContentSubtype("nope"))
	wantCode(t, err, codes.Internal)

	// The proto codec refuses what is not a message.
	err = conn.Invoke(timeout(t), "/x.Y/Echo", &req, &reply)
	wantCode(t, err, codes.Internal)
}

func TestOnFinishAndIgnoredOptions(t *testing.T) {
	s := testenv.StartServer(t, "s")
	conn := dial(t, "static:///"+s.Addr)
	client := echopb.NewEchoerClient(conn)

	var finished []error
	onFinish := grpc.OnFinish(func(err error) { finished = append(finished, err) })
	if _, err := client.Echo(timeout(t), &echopb.EchoRequest{}, onFinish, grpc.UseCompressor("gzip"),
		grpc.MaxCallRecvMsgSize(1<<20), grpc.Peer(nil)); err != nil {
		t.Fatalf("Echo with ignored options: %v", err)
	}
	_, err := client.Missing(timeout(t), &echopb.EchoRequest{}, onFinish)
	if len(finished) != 2 || finished[0] != nil || status.Code(finished[1]) != codes.Unimplemented {
		t.Fatalf("OnFinish saw %v, want [nil, the Unimplemented error]", finished)
	}
	if finished[1] != err {
		t.Fatalf("OnFinish saw %v, the call returned %v", finished[1], err)
	}
}

func TestNewWrapsClientAndCloses(t *testing.T) {
	s := testenv.StartServer(t, "s")
	c, err := grpcfailover.Dial("static:///" + s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := grpcconn.New(c)
	if conn.Client() != c {
		t.Fatal("Client() is not the wrapped client")
	}
	client := echopb.NewEchoerClient(conn)
	if _, err := client.Echo(timeout(t), &echopb.EchoRequest{Text: "x"}); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = client.Echo(timeout(t), &echopb.EchoRequest{})
	wantCode(t, err, codes.Canceled)
}

func TestDialErrorIsAStatus(t *testing.T) {
	_, err := grpcconn.Dial("bogus:///x")
	wantCode(t, err, codes.InvalidArgument)
}

// The failover scenario of the demo, through generated stubs: three instances, round_robin, a
// retry on UNAVAILABLE moves a failed call to another instance; one instance is killed a third
// of the way through and no caller sees an error.
func TestFailoverThroughStubs(t *testing.T) {
	servers := []*testenv.Server{
		testenv.StartServer(t, "a"), testenv.StartServer(t, "b"), testenv.StartServer(t, "c"),
	}
	const failoverJSON = `{
	  "loadBalancingConfig": [{"round_robin": {}}],
	  "methodConfig": [{
	    "name": [{"service": "gf.test.echo.Echoer"}],
	    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
	                    "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}
	  }]
	}`
	conn := dial(t, "static:///"+servers[0].Addr+","+servers[1].Addr+","+servers[2].Addr,
		grpcfailover.WithServiceConfig(failoverJSON))
	waitReady(t, conn.Client(), 3)
	client := echopb.NewEchoerClient(conn)

	const calls, killAt, workers = 600, 200, 8
	var next, failures atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > calls {
					return
				}
				if i == killAt {
					once.Do(servers[1].Kill)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req := &echopb.EchoRequest{Text: "call", Number: i}
				reply, err := client.Echo(ctx, req)
				cancel()
				if err == nil && reply.Number != i {
					err = errors.New("reply of another call")
				}
				if err != nil {
					failures.Add(1)
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed, first: %v", n, calls, <-errs)
	}
	// Every instance took calls: the killed one before it died, so it died mid-run.
	st, err := conn.Client().Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Instances {
		if in.Calls == 0 {
			t.Fatalf("instance %s took no call: %+v", in.Address, st.Instances)
		}
	}
	t.Logf("attempts %d, retries %d, transparent retries %d", st.Attempts, st.Retries, st.TransparentRetries)
}

// waitReady waits until n of the client's instances are READY.
func waitReady(t *testing.T, c *grpcfailover.Client, n int) {
	t.Helper()
	if !testenv.Eventually(20*time.Second, func() bool {
		st, err := c.Stats()
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, in := range st.Instances {
			if in.State == "READY" {
				ready++
			}
		}
		return ready == n
	}) {
		t.Fatalf("the client's %d instances did not all become READY", n)
	}
}

func TestUseCompressor(t *testing.T) {
	s := testenv.StartServer(t, "s")
	client := echopb.NewEchoerClient(dial(t, "static:///"+s.Addr))
	var trailer metadata.MD
	req := &echopb.EchoRequest{Text: strings.Repeat("z", 5000)}
	reply, err := client.Echo(timeout(t), req, grpc.UseCompressor("gzip"), grpc.Trailer(&trailer))
	if err != nil || reply.GetText() != req.Text {
		t.Fatalf("Echo with gzip: %v", err)
	}
	if got := trailer.Get("x-gf-request-encoding"); len(got) != 1 || got[0] != "gzip" {
		t.Fatalf("trailer %v: the server did not get a gzip request", trailer)
	}
	trailer = nil
	if _, err := client.Echo(timeout(t), req, grpc.Trailer(&trailer)); err != nil || len(trailer.Get("x-gf-request-encoding")) != 0 {
		t.Fatalf("Echo without a compressor: %v, trailer %v", err, trailer)
	}
	if _, err := client.Echo(timeout(t), req, grpc.UseCompressor("snappy")); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an unknown compressor: %v, want InvalidArgument", err)
	}
}
