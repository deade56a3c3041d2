package grpcfailover_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

// recorder is a slog.Handler that keeps the records it is enabled for.
type recorder struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// find returns the first record whose message contains every one of parts, with its "target"
// attribute.
func (r *recorder) find(parts ...string) (slog.Record, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(rec.Message, p)
		}
		if all {
			target := ""
			rec.Attrs(func(a slog.Attr) bool {
				if a.Key == "target" {
					target = a.Value.String()
				}
				return true
			})
			return rec, target, true
		}
	}
	return slog.Record{}, "", false
}

// A call to an instance nothing listens on fails; the library's DEBUG records of the failed
// connection attempt reach the slog.Logger given to SetLogger, with their level and target.
// The library logs at WARN unless told otherwise: DEBUG records arriving show that its level
// followed the handler's.
func TestLogRecordsOfAFailingCallReachSlog(t *testing.T) {
	rec := &recorder{level: slog.LevelDebug}
	grpcfailover.SetLogger(slog.New(rec))
	t.Cleanup(func() { grpcfailover.SetLogger(nil) })

	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	c := dial(t, "static:///"+addr)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Invoke(ctx, "/test.Svc/Echo", []byte("x"))
	var se *grpcfailover.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("call to %s: got %v, want a StatusError", addr, err)
	}

	want := "subchannel " + addr + ": connecting"
	if !testenv.Eventually(10*time.Second, func() bool { _, _, ok := rec.find(want); return ok }) {
		t.Fatalf("no record %q reached slog", want)
	}
	r, target, _ := rec.find(want)
	if r.Level != slog.LevelDebug || !strings.HasPrefix(target, "grpc_failover::") {
		t.Fatalf("record %q: level %v, target %q; want DEBUG from grpc_failover::", r.Message, r.Level, target)
	}
	failed := "subchannel " + addr + ": connect to " + addr
	if !testenv.Eventually(10*time.Second, func() bool { _, _, ok := rec.find(failed, "next attempt in"); return ok }) {
		t.Fatalf("no record %q...next attempt in... reached slog", failed)
	}
}
