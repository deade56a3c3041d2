package grpcfailover_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

func dial(t *testing.T, target string, opts ...grpcfailover.Option) *grpcfailover.Client {
	t.Helper()
	c, err := grpcfailover.Dial(target, opts...)
	if err != nil {
		t.Fatalf("Dial(%q): %v", target, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func whoami(t *testing.T, c *grpcfailover.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := c.Invoke(ctx, "/test.Svc/Whoami", nil)
	if err != nil {
		t.Fatalf("Whoami: %v", err)
	}
	return string(reply)
}

// waitReady waits until n of the client's instances are READY.
func waitReady(t *testing.T, c *grpcfailover.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
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
		if ready == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the instances READY, want %d: %+v", ready, n, st.Instances)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusOf(t *testing.T, err error) *grpcfailover.StatusError {
	t.Helper()
	var se *grpcfailover.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *StatusError", err, err)
	}
	return se
}

func TestVersion(t *testing.T) {
	if v := grpcfailover.Version(); v == "" || strings.Count(v, ".") < 2 {
		t.Fatalf("Version() = %q", v)
	}
}

func TestEchoAndRoundRobinOverStaticTarget(t *testing.T) {
	a := testenv.StartServer(t, "a")
	b := testenv.StartServer(t, "b")
	c := dial(t, "static:///"+a.Addr+","+b.Addr, grpcfailover.WithServiceConfig(roundRobin))
	if c.Target() != "static:///"+a.Addr+","+b.Addr {
		t.Fatalf("Target() = %q", c.Target())
	}

	req := []byte("hello\x00world")
	reply, err := c.Invoke(context.Background(), "/UserService/Echo", req)
	if err != nil || !bytes.Equal(reply, req) {
		t.Fatalf("Echo = %q, %v; want %q", reply, err, req)
	}
	reply, err = c.Invoke(context.Background(), "/UserService/Echo", nil)
	if err != nil || reply == nil || len(reply) != 0 {
		t.Fatalf("empty Echo = %#v, %v; want an empty, non-nil reply", reply, err)
	}

	// round_robin picks among READY instances: count only once both are.
	waitReady(t, c, 2)
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		seen[whoami(t, c)]++
	}
	if seen["a"] != 10 || seen["b"] != 10 {
		t.Fatalf("round_robin over two instances answered %v, want 10 each", seen)
	}
}

func TestStatusErrors(t *testing.T) {
	s := testenv.StartServer(t, "s")
	failing := testenv.StartServer(t, "f", "--fail-rate", "1", "--fail-code", "7")
	c := dial(t, "static:///"+s.Addr)

	_, err := c.Invoke(context.Background(), "/test.Svc/NoSuchMethod", nil)
	se := statusOf(t, err)
	if se.Code() != grpcfailover.Unimplemented || grpcfailover.CodeOf(err) != grpcfailover.Unimplemented {
		t.Fatalf("unknown method: code %v, want Unimplemented", se.Code())
	}
	if !strings.HasPrefix(err.Error(), "grpcfailover: code = Unimplemented desc = ") {
		t.Fatalf("Error() = %q", err.Error())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a server error must not match the context errors: %v", err)
	}

	_, err = c.Invoke(context.Background(), "no-slash", nil)
	if se := statusOf(t, err); se.Code() != grpcfailover.InvalidArgument || !strings.Contains(se.Message(), "method") {
		t.Fatalf("bad method name: %v, want InvalidArgument naming the method", err)
	}

	f := dial(t, "static:///"+failing.Addr)
	_, err = f.Invoke(context.Background(), "/test.Svc/Echo", []byte("x"))
	if se := statusOf(t, err); se.Code() != grpcfailover.PermissionDenied || se.Message() == "" {
		t.Fatalf("failing server: %v, want PermissionDenied with a message", err)
	}

	if grpcfailover.CodeOf(nil) != grpcfailover.OK || grpcfailover.CodeOf(errors.New("x")) != grpcfailover.Unknown ||
		grpcfailover.CodeOf(context.Canceled) != grpcfailover.Canceled {
		t.Fatal("CodeOf maps nil, foreign and context errors wrongly")
	}
	if grpcfailover.Unavailable.String() != "Unavailable" || grpcfailover.Code(99).String() != "Code(99)" {
		t.Fatal("Code.String")
	}
}

func TestDialRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		target string
		opts   []grpcfailover.Option
		want   string
	}{
		{"http://x", nil, "target"},
		{"static:///127.0.0.1:1", []grpcfailover.Option{grpcfailover.WithServiceConfig(`{"loadBalancingConfig": 5}`)}, "loadBalancingConfig"},
		{"static:///127.0.0.1:1", []grpcfailover.Option{grpcfailover.WithServiceConfig(`{not json`)}, "service_config"},
		{"static:///127.0.0.1:1", []grpcfailover.Option{grpcfailover.WithMaxAttempts(0)}, "max_attempts"},
	} {
		c, err := grpcfailover.Dial(tc.target, tc.opts...)
		if err == nil {
			_ = c.Close()
			t.Errorf("Dial(%q) succeeded, want InvalidArgument", tc.target)
			continue
		}
		if se := statusOf(t, err); se.Code() != grpcfailover.InvalidArgument || !strings.Contains(se.Message(), tc.want) {
			t.Errorf("Dial(%q): %v, want InvalidArgument mentioning %q", tc.target, err, tc.want)
		}
	}
}

func TestContextDeadlineBecomesCallDeadline(t *testing.T) {
	slow := testenv.StartServer(t, "slow", "--delay-ms", "5000")
	c := dial(t, "static:///"+slow.Addr)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Invoke(ctx, "/test.Svc/Echo", []byte("x"))
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || statusOf(t, err).Code() != grpcfailover.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded matching context.DeadlineExceeded", err)
	}
	if elapsed > 3*time.Second {
		t.Fatalf("the call took %v: the context's deadline did not bound it", elapsed)
	}

	_, err = c.Invoke(ctx, "/test.Svc/Echo", nil)
	if !errors.Is(err, context.DeadlineExceeded) || grpcfailover.CodeOf(err) != grpcfailover.DeadlineExceeded {
		t.Fatalf("expired context: %v", err)
	}
}

func TestCancelContextCancelsCall(t *testing.T) {
	slow := testenv.StartServer(t, "slow", "--delay-ms", "5000")
	c := dial(t, "static:///"+slow.Addr)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Invoke(ctx, "/test.Svc/Echo", []byte("x"))
	if !errors.Is(err, context.Canceled) || statusOf(t, err).Code() != grpcfailover.Canceled {
		t.Fatalf("err = %v, want Canceled matching context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("cancelling took %v", elapsed)
	}

	_, err = c.Invoke(ctx, "/test.Svc/Echo", nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	// The client is still fine for the next call, which ends by its own deadline.
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	if _, err := c.Invoke(dctx, "/test.Svc/Echo", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("next call: %v, want DeadlineExceeded", err)
	}
}

func TestMetadataHeadersAndTrailers(t *testing.T) {
	s := testenv.StartServer(t, "s")
	c := dial(t, "static:///"+s.Addr)

	var header, trailer grpcfailover.Metadata
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := c.Invoke(ctx, "/test.Svc/Echo", []byte("m"),
		grpcfailover.WithMetadata(grpcfailover.Metadata{"x-echo-user": {"alice"}, "x-other": {"1"}}),
		grpcfailover.WithMetadata(grpcfailover.Metadata{"x-echo-bin": {"\x00\xff"}}),
		grpcfailover.Header(&header), grpcfailover.Trailer(&trailer), grpcfailover.WaitForReady(true))
	if err != nil || string(reply) != "m" {
		t.Fatalf("Echo with metadata = %q, %v", reply, err)
	}
	if got := trailer["x-echo-user"]; len(got) != 1 || got[0] != "alice" {
		t.Fatalf("trailers %v: want x-echo-user=alice echoed", trailer)
	}
	if got := trailer["x-echo-bin"]; len(got) != 1 || got[0] != "\x00\xff" {
		t.Fatalf("trailers %v: want the binary x-echo-bin echoed", trailer)
	}
	if _, ok := trailer["x-other"]; ok {
		t.Fatalf("trailers %v: only x-echo-* keys come back", trailer)
	}
	if header == nil {
		t.Fatal("Header(&md) left md nil")
	}

	_, err = c.Invoke(ctx, "/test.Svc/Echo", nil, grpcfailover.WithMetadata(grpcfailover.Metadata{"Bad Key": {"v"}}))
	if statusOf(t, err).Code() != grpcfailover.InvalidArgument {
		t.Fatalf("invalid metadata key: %v, want InvalidArgument", err)
	}
}

func TestCloseIsIdempotentAndEndsCalls(t *testing.T) {
	slow := testenv.StartServer(t, "slow", "--delay-ms", "5000")
	c, err := grpcfailover.Dial("static:///" + slow.Addr)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for i := 0; i < cap(errs); i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Invoke(ctx, "/test.Svc/Echo", nil)
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; grpcfailover.CodeOf(err) != grpcfailover.Canceled {
			t.Fatalf("call in flight at Close: %v, want Canceled", err)
		}
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("calls in flight took %v to end after Close", elapsed)
	}
	_, err = c.Invoke(context.Background(), "/test.Svc/Echo", nil)
	if grpcfailover.CodeOf(err) != grpcfailover.Canceled {
		t.Fatalf("call after Close: %v, want Canceled", err)
	}
	if _, err := c.Stats(); grpcfailover.CodeOf(err) != grpcfailover.Canceled {
		t.Fatalf("Stats after Close: %v, want Canceled", err)
	}
}

// Many goroutines call while another closes: under -race this checks the handle is never used
// after gf_close.
func TestConcurrentCallsAndClose(t *testing.T) {
	s := testenv.StartServer(t, "s")
	for round := 0; round < 3; round++ {
		c, err := grpcfailover.Dial("static:///" + s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				ctx := context.Background()
				if g%2 == 1 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
				}
				for i := 0; i < 50; i++ {
					if _, err := c.Invoke(ctx, "/test.Svc/Echo", []byte{byte(i)}); err != nil {
						if code := grpcfailover.CodeOf(err); code != grpcfailover.Canceled {
							t.Errorf("call: %v, want success or Canceled", err)
						}
						return
					}
				}
			}(g)
		}
		time.Sleep(time.Duration(round*20) * time.Millisecond)
		_ = c.Close()
		wg.Wait()
	}
}

func TestStats(t *testing.T) {
	s := testenv.StartServer(t, "s")
	c := dial(t, "static:///"+s.Addr, grpcfailover.WithServiceConfig(roundRobin))
	whoami(t, c)
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Calls != 1 || st.Policy != "round_robin" || len(st.Instances) != 1 ||
		st.Instances[0].Address != s.Addr || st.Instances[0].State != "READY" {
		t.Fatalf("Stats() = %+v", st)
	}
}

func TestOptionsReachTheLibrary(t *testing.T) {
	s := testenv.StartServer(t, "s")
	c := dial(t, "static:///"+s.Addr,
		grpcfailover.WithConnectTimeout(2*time.Second),
		grpcfailover.WithConnectBackoff(grpcfailover.ConnectBackoff{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Multiplier: 1.6, Jitter: 0.2}),
		grpcfailover.WithMaxInFlightPerInstance(100),
		grpcfailover.WithKeepalive(10*time.Second, 5*time.Second),
		grpcfailover.WithRawOption("max_attempts", 3),
		grpcfailover.WithEtcd("127.0.0.1:1,127.0.0.1:2"), grpcfailover.WithEtcdDialTimeout(time.Second),
		grpcfailover.WithEtcdAuth("user", "secret"))
	if got := whoami(t, c); got != "s" {
		t.Fatalf("Whoami = %q", got)
	}
	if _, err := grpcfailover.Dial("static:///"+s.Addr, grpcfailover.WithConnectBackoff(grpcfailover.ConnectBackoff{Jitter: 2})); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("a jitter of 2: %v, want InvalidArgument", err)
	}
}

// Nothing but the call itself references these clients; the GC stress mode
// (-tags grpcfailover_gcstress) collects around every cgo call and fails if one is finalized
// while its handle is still in use.
func TestCallsOnUnreferencedClient(t *testing.T) {
	s := testenv.StartServer(t, "s")
	newClient := func() *grpcfailover.Client {
		c, err := grpcfailover.Dial("static:///" + s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if reply, err := newClient().Invoke(ctx, "/test.Svc/Echo", []byte("x")); err != nil || string(reply) != "x" {
		t.Fatalf("Echo = %q, %v", reply, err)
	}
	if reply, err := newClient().Invoke(context.Background(), "/test.Svc/Echo", []byte("y")); err != nil || string(reply) != "y" {
		t.Fatalf("Echo = %q, %v", reply, err)
	}
	var trailer grpcfailover.Metadata
	if _, err := newClient().Invoke(ctx, "/test.Svc/Echo", nil, grpcfailover.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient().Stats(); err != nil {
		t.Fatal(err)
	}
}

// go test -bench Invoke: one client, 100-byte Echo against one local gf-testserver, with
// GOMAXPROCS × -cpu goroutines calling.
func BenchmarkInvoke(b *testing.B) {
	s := testenv.StartServer(b, "bench")
	c, err := grpcfailover.Dial("static:///" + s.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := make([]byte, 100)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := c.Invoke(ctx, "/bench.Svc/Echo", req)
			cancel()
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestMessageSizeLimits(t *testing.T) {
	s := testenv.StartServer(t, "s")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := make([]byte, 5<<20)
	c := dial(t, "static:///"+s.Addr)
	if _, err := c.Invoke(ctx, "/test.Svc/Echo", big); grpcfailover.CodeOf(err) != grpcfailover.ResourceExhausted ||
		!strings.Contains(err.Error(), "max_receive_message_bytes") {
		t.Fatalf("a 5 MiB response by default: %v, want ResourceExhausted naming max_receive_message_bytes", err)
	}
	raised := dial(t, "static:///"+s.Addr, grpcfailover.WithMaxReceiveMessageBytes(8<<20), grpcfailover.WithMaxSendMessageBytes(6<<20))
	if got, err := raised.Invoke(ctx, "/test.Svc/Echo", big); err != nil || len(got) != len(big) {
		t.Fatalf("with the limit raised: %d bytes, %v", len(got), err)
	}
	if _, err := raised.Invoke(ctx, "/test.Svc/Echo", make([]byte, 7<<20)); grpcfailover.CodeOf(err) != grpcfailover.ResourceExhausted ||
		!strings.Contains(err.Error(), "exceeds max_send_message_bytes 6291456") {
		t.Fatalf("a 7 MiB request over a 6 MiB send limit: %v", err)
	}
}

func TestCompression(t *testing.T) {
	s := testenv.StartServer(t, "s")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := []byte(strings.Repeat("c", 4000))
	for _, tc := range []struct {
		dial []grpcfailover.Option
		call []grpcfailover.CallOption
		want string
	}{
		{nil, nil, ""},
		{[]grpcfailover.Option{grpcfailover.WithCompression("gzip")}, nil, "gzip"},
		{[]grpcfailover.Option{grpcfailover.WithCompression("gzip")}, []grpcfailover.CallOption{grpcfailover.UseCompression("identity")}, ""},
		{nil, []grpcfailover.CallOption{grpcfailover.UseCompression("gzip")}, "gzip"},
	} {
		c := dial(t, "static:///"+s.Addr, tc.dial...)
		var trailer grpcfailover.Metadata
		got, err := c.Invoke(ctx, "/test.Svc/Echo", req, append(tc.call, grpcfailover.Trailer(&trailer))...)
		if err != nil || string(got) != string(req) {
			t.Fatalf("%+v: %v", tc, err)
		}
		if enc := strings.Join(trailer["x-gf-request-encoding"], ","); enc != tc.want {
			t.Fatalf("%+v: the server got encoding %q, want %q", tc, enc, tc.want)
		}
	}
	c := dial(t, "static:///"+s.Addr)
	if _, err := c.Invoke(ctx, "/test.Svc/Echo", req, grpcfailover.UseCompression("snappy")); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("an unknown compression: %v, want InvalidArgument", err)
	}
	if _, err := c.Invoke(ctx, "/test.Svc/Echo", req, grpcfailover.UseCompression("gzip\x00x")); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("a compression with a NUL byte: %v, want InvalidArgument", err)
	}
	if _, err := grpcfailover.Dial("static:///"+s.Addr, grpcfailover.WithCompression("snappy")); grpcfailover.CodeOf(err) != grpcfailover.InvalidArgument {
		t.Fatalf("an unknown client compression: %v, want InvalidArgument", err)
	}
}
