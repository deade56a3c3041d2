package grpcfailover_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
)

// Metrics returns the Prometheus text with the calls counted: the listed method under its
// name, any other under "other", and the library's own counters.
func TestMetricsCountTheCalls(t *testing.T) {
	s := testenv.StartServer(t, "m")
	target := "static:///" + s.Addr
	c := dial(t, target, grpcfailover.WithRawOption("metrics", map[string]any{"methods": []string{"test.Svc/Echo"}}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 4 {
		if _, err := c.Invoke(ctx, "/test.Svc/Echo", []byte("hi")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Invoke(ctx, "/test.Svc/Whoami", nil); err != nil {
		t.Fatal(err)
	}
	text, err := c.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf(`grpc_client_attempt_started_total{grpc_method="test.Svc/Echo",grpc_target=%q} 4`, target),
		fmt.Sprintf(`grpc_client_attempt_started_total{grpc_method="other",grpc_target=%q} 1`, target),
		fmt.Sprintf(`grpc_client_call_duration_seconds_count{grpc_method="test.Svc/Echo",grpc_status="OK",grpc_target=%q} 4`, target),
		fmt.Sprintf(`grpc_client_attempt_sent_total_compressed_message_size_bytes_sum{grpc_method="test.Svc/Echo",grpc_status="OK",grpc_target=%q} 8`, target),
		fmt.Sprintf(`grpc_failover_calls_total{grpc_target=%q} 5`, target),
		fmt.Sprintf(`grpc_failover_instance_picks_total{grpc_target=%q,instance=%q} 5`, target, s.Addr),
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("no line %s in:\n%s", want, text)
		}
	}
	_ = c.Close()
	var se *grpcfailover.StatusError
	if _, err := c.Metrics(); !errors.As(err, &se) || se.Code() != grpcfailover.Canceled {
		t.Fatalf("Metrics after Close: %v, want Canceled", err)
	}
}
