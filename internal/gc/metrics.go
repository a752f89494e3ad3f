package gc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the collector's and the markers' Prometheus metrics.
type Metrics struct {
	runs        *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	duration    prometheus.Gauge
	reclaimed   prometheus.Counter
	deleted     *prometheus.CounterVec
	spared      prometheus.Counter
	markers     prometheus.Counter
	refusals    prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	for _, c := range []prometheus.Collector{m.runs, m.lastSuccess, m.duration, m.reclaimed, m.deleted, m.spared, m.markers, m.refusals} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register gc metrics: %w", err)
		}
	}
	return m, nil
}

// newMetrics creates the metrics, registered nowhere.
func newMetrics() *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_gc_runs_total",
			Help: "Garbage collections run by this process, by result (ok, error)."}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portcullis_gc_last_success_timestamp_seconds",
			Help: "When this process last finished a garbage collection without error (Unix time)."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portcullis_gc_duration_seconds",
			Help: "How long this process's last garbage collection took."}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "portcullis_gc_bytes_reclaimed_total",
			Help: "Bytes of blobs deleted by garbage collection."}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_gc_deleted_total",
			Help: "What garbage collection deleted, by kind (tag, manifest, blob, upload, data: S3 data objects no path named)."}, []string{"kind"}),
		spared: prometheus.NewCounter(prometheus.CounterOpts{Name: "portcullis_gc_spared_total",
			Help: "Deletion candidates spared because a client was told they exist during the collection."}),
		markers: prometheus.NewCounter(prometheus.CounterOpts{Name: "portcullis_gc_markers_written_total",
			Help: "Markers this replica wrote for content it vouched for during collections."}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{Name: "portcullis_gc_tombstone_refusals_total",
			Help: "Requests answered as though content were absent because garbage collection was deleting it."}),
	}
	for _, result := range []string{"ok", "error"} {
		m.runs.WithLabelValues(result) // at 0 from the start, for alerts
	}
	return m
}
