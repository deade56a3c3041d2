package prometheus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	grpcfailover "grpc-failover/bindings/go"
	"grpc-failover/bindings/go/internal/testenv"
	gfprom "grpc-failover/bindings/go/prometheus"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// find returns the metric of family name whose labels include want, or nil.
func find(families []*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metrics
				}
			}
			return m
		}
	}
	return nil
}

// Two clients' collectors in one registry: Gather returns each client's counters, gauges and
// histograms with the values the calls produced, under the client's grpc_target.
func TestCollectorGathersTheClientsMetrics(t *testing.T) {
	s := testenv.StartServer(t, "p")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg := prometheus.NewPedanticRegistry()
	targets := []string{"static:///" + s.Addr, "static:///" + s.Addr + "," + s.Addr}
	for i, target := range targets {
		c, err := grpcfailover.Dial(target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		for range 3 + i {
			if _, err := c.Invoke(ctx, "/test.Svc/Echo", []byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
		reg.MustRegister(gfprom.NewCollector(c))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for i, target := range targets {
		calls := float64(3 + i)
		l := map[string]string{"grpc_target": target}
		if m := find(families, "grpc_failover_calls_total", l); m.GetCounter().GetValue() != calls {
			t.Errorf("%s: grpc_failover_calls_total = %v, want %v", target, m, calls)
		}
		if m := find(families, "grpc_subchannel_open_connections", l); m.GetGauge().GetValue() != 1 {
			t.Errorf("%s: grpc_subchannel_open_connections = %v, want 1", target, m)
		}
		ok := map[string]string{"grpc_target": target, "grpc_method": "other", "grpc_status": "OK"}
		h := find(families, "grpc_client_call_duration_seconds", ok).GetHistogram()
		if h.GetSampleCount() != uint64(calls) || len(h.GetBucket()) != 41 {
			t.Errorf("%s: call duration histogram %v, want %v calls in 41 buckets", target, h, calls)
		}
		sent := find(families, "grpc_client_attempt_sent_total_compressed_message_size_bytes", ok).GetHistogram()
		if sent.GetSampleSum() != 5*calls {
			t.Errorf("%s: sent bytes %v, want %v", target, sent.GetSampleSum(), 5*calls)
		}
	}
}

// A closed client's collector sends nothing, and Gather still succeeds.
func TestACollectorOfAClosedClientIsEmpty(t *testing.T) {
	s := testenv.StartServer(t, "q")
	c, err := grpcfailover.Dial("static:///" + s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(gfprom.NewCollector(c))
	_ = c.Close()
	families, err := reg.Gather()
	if err != nil || len(families) != 0 {
		t.Fatalf("Gather after Close: %d families, %v", len(families), err)
	}
}

// Parse reads the text format the library writes.
func ExampleParse() {
	families, err := gfprom.Parse("# TYPE grpc_failover_calls_total counter\ngrpc_failover_calls_total{grpc_target=\"static:///a\"} 3\n")
	fmt.Println(families["grpc_failover_calls_total"].GetMetric()[0].GetCounter().GetValue(), err)
	// Output: 3 <nil>
}
