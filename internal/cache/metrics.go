package cache

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/replication"
)

type metrics struct {
	requests       *prometheus.CounterVec
	remoteRequests *prometheus.CounterVec
	remoteBytes    *prometheus.CounterVec
	evicted        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_cache_requests_total",
			Help: "Reads of cache namespaces by cache, kind (manifest, blob, referrers) and result (hit, miss, stale, error)."},
			[]string{"cache", "kind", "result"}),
		remoteRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_remote_requests_total",
			Help: "HTTP requests to remotes by remote, operation and status code (0: no response)."},
			[]string{"remote", "op", "code"}),
		remoteBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_remote_bytes_total",
			Help: "Blob bytes received from remotes."}, []string{"remote"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portcullis_cache_evicted_total",
			Help: "Manifests evicted from caches by age or size."}, []string{"cache"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.remoteRequests, m.remoteBytes, m.evicted} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register cache metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) request(cache, kind string, res Result, err error) {
	r := string(res)
	if err != nil {
		r = "error"
	}
	if r == "" {
		return
	}
	m.requests.WithLabelValues(cache, kind, r).Inc()
}

func (m *metrics) bytes(remote string, n int) { m.remoteBytes.WithLabelValues(remote).Add(float64(n)) }

// Observe returns the function a remote calls for each request it sends,
// counting it under the remote's name.
func (s *Set) Observe(remote string) func(replication.Request) {
	return func(r replication.Request) {
		code := fmt.Sprint(r.Status)
		if r.Status == 0 && r.Err != nil && errors.Is(r.Err, replication.ErrUnavailable) {
			code = "0"
		}
		s.metrics.remoteRequests.WithLabelValues(remote, r.Op, code).Inc()
	}
}
