package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the request metrics of the front server. Every label has a
// bounded set of values: methods and route classes are normalised, never
// taken from the path.
type Metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	bytesIn         *prometheus.CounterVec
	bytesOut        *prometheus.CounterVec
	uploadsInFlight prometheus.Gauge
	inFlight        prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by method, route class and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "portcullis", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to serve a request, by method and route class.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"method", "route"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "http", Name: "request_bytes_total",
			Help: "Request body bytes read, by route class.",
		}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "http", Name: "response_bytes_total",
			Help: "Response body bytes written, by route class.",
		}, []string{"route"}),
		uploadsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "portcullis", Subsystem: "http", Name: "uploads_in_flight",
			Help: "Blob upload requests (POST, PATCH, PUT) being served.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "portcullis", Subsystem: "http", Name: "requests_in_flight",
			Help: "Requests being served.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.bytesIn, m.bytesOut, m.uploadsInFlight, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Route classes, the only values of the route label.
const (
	RouteBase       = "base"
	RouteCatalog    = "catalog"
	RouteTags       = "tags"
	RouteManifest   = "manifest"
	RouteBlob       = "blob"
	RouteBlobUpload = "blob_upload"
	RouteReferrers  = "referrers"
	RouteToken      = "token"
	RouteAPI        = "api"
	RouteMetrics    = "metrics"
	RouteHealth     = "health"
	RouteOther      = "other"
)

// ClassifyRoute maps a request path to its route class.
func ClassifyRoute(path string) string {
	switch {
	case path == "/v2/" || path == "/v2":
		return RouteBase
	case path == "/v2/_catalog":
		return RouteCatalog
	case strings.HasPrefix(path, "/v2/"):
		switch {
		case strings.Contains(path, "/blobs/uploads"):
			return RouteBlobUpload
		case strings.Contains(path, "/blobs/"):
			return RouteBlob
		case strings.Contains(path, "/manifests/"):
			return RouteManifest
		case strings.Contains(path, "/referrers/"):
			return RouteReferrers
		case strings.HasSuffix(path, "/tags/list"):
			return RouteTags
		}
		return RouteOther
	case path == "/token":
		return RouteToken
	case strings.HasPrefix(path, "/api/"):
		return RouteAPI
	case path == "/metrics":
		return RouteMetrics
	case path == "/healthz" || path == "/readyz":
		return RouteHealth
	}
	return RouteOther
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

func codeLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}
