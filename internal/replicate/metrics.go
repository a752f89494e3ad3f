package replicate

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/replication"
)

// metrics are replication's Prometheus metrics.
type metrics struct {
	failures *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	lag      *prometheus.HistogramVec
	pending  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_replication_failures_total",
			Help: "Failed copies and tag deletions by rule and reason (denied, invalid, unavailable, unauthorized, other)."}, []string{"rule", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_replication_bytes_total",
			Help: "Blob bytes copied by rule."}, []string{"rule"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "portcullis_replication_lag_seconds",
			Help:    "Time from a push here to its copy at the remote, by rule.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}}, []string{"rule"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portcullis_replication_pending",
			Help: "Events waiting to be replicated, by rule (computed every 15s)."}, []string{"rule"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.failures, m.bytes, m.lag, m.pending} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// reason classifies a failure for the failures metric.
func reason(err error) string {
	var se *replication.StatusError
	switch {
	case errors.Is(err, replication.ErrDenied):
		return "denied"
	case replication.Permanent(err):
		return "invalid"
	case errors.Is(err, replication.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, replication.ErrUnauthorized):
		return "unauthorized"
	case errors.As(err, &se):
		return "status"
	}
	return "other"
}
