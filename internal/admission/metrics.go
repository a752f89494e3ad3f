package admission

import (
	"context"
	"errors"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// gateMetrics are what an operator graphs of the gate's refusals and of the
// admission webhooks' latency.
type gateMetrics struct {
	refusals       *prometheus.CounterVec
	webhookSeconds *prometheus.HistogramVec
}

// newGateMetrics registers the gate's metrics with reg. A gate built again
// (from a reloaded configuration) counts on in the series the first one
// registered.
func newGateMetrics(reg prometheus.Registerer, webhooks []config.Webhook) (gateMetrics, error) {
	m := gateMetrics{
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "admission", Name: "refusals_total",
			Help: "Requests the gate refused (403 DENIED), by check (tag: a tag push; pull: a manifest read; blob: a blob read) and mode (enforce, quarantine).",
		}, []string{"check", "mode"}),
		webhookSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "portcullis", Subsystem: "admission", Name: "webhook_duration_seconds",
			Help:    "Time an admission webhook took to answer (or fail), by webhook name.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"webhook"}),
	}
	var err error
	if m.refusals, err = registerOrAdopt(reg, m.refusals); err != nil {
		return gateMetrics{}, err
	}
	if m.webhookSeconds, err = registerOrAdopt(reg, m.webhookSeconds); err != nil {
		return gateMetrics{}, err
	}
	// Every series exists from the start, at 0, so that rates and alerts
	// see the first refusal and each webhook's first call.
	for _, check := range []string{"tag", "pull", "blob"} {
		for _, mode := range []policy.Mode{policy.ModeEnforce, policy.ModeQuarantine} {
			m.refusals.WithLabelValues(check, string(mode))
		}
	}
	for _, w := range webhooks {
		m.webhookSeconds.WithLabelValues(w.Name)
	}
	return m, nil
}

// registerOrAdopt registers c with reg and returns it or, when a gate built
// before (from the configuration before a reload) registered the same
// metric, the collector that one registered, to count on in its series.
func registerOrAdopt[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// AdmitTag decides a tag push (see admitTag): nil to accept, or an errcode
// error (DENIED) whose message tells the client what to do.
func (g *Gate) AdmitTag(ctx context.Context, p TagPush) error {
	err := g.admitTag(ctx, p)
	g.countRefusal(err, "tag", policy.ModeEnforce)
	return err
}

// AllowPull decides a manifest read in a gated repository (see allowPull).
// It returns nil or a DENIED errcode error.
func (g *Gate) AllowPull(ctx context.Context, p Pull) error {
	err := g.allowPull(ctx, p)
	g.countRefusal(err, "pull", g.readMode(p.Repository))
	return err
}

// AllowBlob decides a blob read in a gated repository (see allowBlob).
// It returns nil or a DENIED errcode error.
func (g *Gate) AllowBlob(ctx context.Context, b BlobRead) error {
	err := g.allowBlob(ctx, b)
	g.countRefusal(err, "blob", g.readMode(b.Repository))
	return err
}

// readMode is the mode that gates reads of repo: quarantine, else enforce.
func (g *Gate) readMode(repo string) policy.Mode {
	if g.quarantined(repo) {
		return policy.ModeQuarantine
	}
	return policy.ModeEnforce
}

func (g *Gate) countRefusal(err error, check string, mode policy.Mode) {
	var e errcode.Error
	if errors.As(err, &e) && e.Code == errcode.ErrorCodeDenied {
		g.obs.refusals.WithLabelValues(check, string(mode)).Inc()
	}
}
