// Package prometheus exports a grpc-failover client's metrics to a Prometheus registry: the
// gRFC A66 client metrics, the A78/A94 load-balancing metrics and the library's own
// grpc_failover_* metrics, under the names and labels of Client.Metrics.
//
//	c, _ := grpcfailover.Dial("etcd:///service/user")
//	prometheus.MustRegister(gfprom.NewCollector(c))
//	http.Handle("/metrics", promhttp.Handler())
//
// It is a module of its own so that the binding itself does not depend on client_golang.
//
// Why a prometheus.Collector and not an OpenTelemetry metric.Producer: the library writes its
// metrics already named as the OpenTelemetry Prometheus exporter names them (A66's
// grpc.client.attempt.duration is grpc_client_attempt_duration_seconds), so a Collector passes
// them to the registry exactly as dashboards built for grpc-go's and grpcio's exporters expect
// them, with nothing renamed on the way. An OpenTelemetry pipeline can still take them: the
// OpenTelemetry Prometheus bridge (go.opentelemetry.io/contrib/bridges/prometheus) turns a
// Prometheus gatherer into a metric.Producer.
package prometheus

import (
	"errors"
	"fmt"
	"math"
	"strings"

	grpcfailover "grpc-failover/bindings/go"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Collector is a prometheus.Collector of one client's metrics. Each scrape reads them anew
// (Client.Metrics: no lock on the client's call path); a closed client reports nothing.
//
// It is an unchecked collector (Describe sends nothing): the series change as instances come
// and go. Several clients' collectors can be registered together: their series differ in the
// grpc_target label.
type Collector struct {
	client *grpcfailover.Client
}

// NewCollector returns a collector of c's metrics.
func NewCollector(c *grpcfailover.Client) *Collector {
	return &Collector{client: c}
}

// Describe sends nothing: the collector is unchecked.
func (*Collector) Describe(chan<- *prometheus.Desc) {}

// Collect sends the client's metrics as they are now. An error reading or parsing them is
// sent as an invalid metric, which makes the registry's Gather report it; a closed client
// sends nothing.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	text, err := c.client.Metrics()
	if err != nil {
		var se *grpcfailover.StatusError
		if errors.As(err, &se) && se.Code() == grpcfailover.Canceled {
			return // closed
		}
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("grpc_failover_collector_error", "Reading a client's metrics failed.", nil, nil), err)
		return
	}
	families, err := Parse(text)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("grpc_failover_collector_error", "Parsing a client's metrics failed.", nil, nil), err)
		return
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			metric, err := constMetric(f, m)
			if err != nil {
				metric = prometheus.NewInvalidMetric(prometheus.NewDesc(f.GetName(), f.GetHelp(), nil, nil), err)
			}
			ch <- metric
		}
	}
}

// Parse parses the text of Client.Metrics into metric families, by name.
func Parse(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

func constMetric(f *dto.MetricFamily, m *dto.Metric) (prometheus.Metric, error) {
	names := make([]string, 0, len(m.GetLabel()))
	values := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
		values = append(values, l.GetValue())
	}
	desc := prometheus.NewDesc(f.GetName(), f.GetHelp(), names, nil)
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return prometheus.NewConstMetric(desc, prometheus.CounterValue, m.GetCounter().GetValue(), values...)
	case dto.MetricType_GAUGE:
		return prometheus.NewConstMetric(desc, prometheus.GaugeValue, m.GetGauge().GetValue(), values...)
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		buckets := make(map[float64]uint64, len(h.GetBucket()))
		for _, b := range h.GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) { // implied by the sample count
				buckets[b.GetUpperBound()] = b.GetCumulativeCount()
			}
		}
		return prometheus.NewConstHistogram(desc, h.GetSampleCount(), h.GetSampleSum(), buckets, values...)
	default:
		return nil, fmt.Errorf("metric %s: type %s is not exported", f.GetName(), f.GetType())
	}
}
