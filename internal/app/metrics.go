package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/api"
)

// distributionMetrics is the prefix of the only metric families of
// distribution's that mean something here: its storage actions. Its proxy
// (we run our own pull-through caches) and blob descriptor cache (kept off)
// register metrics that would always read zero.
const distributionMetrics = "registry_storage_action_"

// gatherDistribution returns distribution's storage metric families from
// the default Prometheus registry, where its packages register them.
func gatherDistribution() ([]*dto.MetricFamily, error) {
	all, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, mf := range all {
		if strings.HasPrefix(mf.GetName(), distributionMetrics) {
			out = append(out, mf)
		}
	}
	return out, nil
}

// distributionGatherer serves only distribution's storage metric families
// from the default registry.
type distributionGatherer struct{}

func (distributionGatherer) Gather() ([]*dto.MetricFamily, error) { return gatherDistribution() }

// metricsHandler serves the Prometheus exposition: our registry's metrics
// and distribution's storage metrics, nothing else of the default registry.
// A few scrapes run at once; more are answered 503 at once. A series that
// cannot be read (the certificate file gone, the robots' listing failed)
// is logged and left out: the scrape serves every other one.
func (a *App) metricsHandler() http.Handler {
	gatherers := prometheus.Gatherers{a.metrics, distributionGatherer{}}
	return promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{MaxRequestsInFlight: 4,
		ErrorHandling: promhttp.ContinueOnError, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)})
}

// catalogAccess is the scope /metrics needs on the registry port when auth
// is on, the one the other operator routes need.
var catalogAccess = dauth.Access{Resource: dauth.Resource{Type: "registry", Name: "catalog"}, Action: "*"}

// guardMetrics lets through the scrapes of a subject listed in
// auth.catalog: a bearer token with the catalog scope (registry:catalog:*),
// or basic credentials (a user, or robot+NAME with its secret, as a
// Prometheus basic_auth sends them), checked as a login at the token
// endpoint is: under its rate limit and audited. Anything else is refused.
func (a *App) guardMetrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		denied := errcode.ErrorCodeDenied.WithMessage("metrics need the catalog scope (registry:catalog:*): a subject listed in auth.catalog")
		auth := generationOf(r.Context()).auth
		if user, pass, ok := r.BasicAuth(); ok {
			subject, err := auth.Service.Login(r.Context(), user, pass, token.RemoteHost(r))
			switch {
			case err != nil:
				w.Header().Set("WWW-Authenticate", `Basic realm="metrics"`)
				api.WriteError(w, r, a.log, errcode.ErrorCodeUnauthorized.WithMessage("invalid credentials"))
			case !auth.Policy.Catalog(subject).Allowed:
				api.WriteError(w, r, a.log, denied)
			default:
				next.ServeHTTP(w, r)
			}
			return
		}
		_, err := auth.Controller.Authorize(r, catalogAccess)
		var ch dauth.Challenge
		switch {
		case errors.As(err, &ch):
			api.WriteError(w, r, a.log, err)
		case err != nil:
			api.WriteError(w, r, a.log, denied)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// serveMetrics serves /metrics alone on http.metricsAddr until ctx is
// cancelled: a listener of its own, for a scraper on a private network,
// without auth. It returns once the listener is open.
func (a *App) serveMetrics(ctx context.Context) (stop func(), err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.HTTP.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("http.metricsAddr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metricsHandler())
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       a.cfg.HTTP.IdleTimeout.D(),
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.ErrorContext(ctx, "metrics listener stopped", "err", err)
		}
	}()
	a.log.InfoContext(ctx, "serving metrics", "addr", ln.Addr().String())
	return func() {
		_ = hs.Close()
		<-done
	}, nil
}

// registerBuildInfo registers portcullis_build_info: 1, labelled with the
// version, the Go version and distribution's version.
func registerBuildInfo(reg prometheus.Registerer, version string) error {
	if version == "" {
		version = "dev"
	}
	goVersion, dist := runtime.Version(), "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/distribution/distribution/v3" {
				dist = d.Version
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "portcullis_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion, "distribution": dist},
	})
	g.Set(1)
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("register build info: %w", err)
	}
	return nil
}

// registerOperatorMetrics registers what an operator graphs besides the
// components' own metrics: the build, the serving certificate's expiry and
// what the storage holds.
func (a *App) registerOperatorMetrics() error {
	if err := registerBuildInfo(a.metrics, a.opts.Version); err != nil {
		return err
	}
	if a.cfg.HTTP.TLS.Enabled() {
		// TLS on or off needs a restart; the files may change at a reload.
		certFile := func() string { return a.gen.Load().cfg.HTTP.TLS.CertFile }
		if err := a.metrics.Register(newCertExpiry(certFile)); err != nil {
			return fmt.Errorf("register certificate metrics: %w", err)
		}
	}
	if a.cfg.Auth.Enabled {
		robots := func() *token.Robots {
			if g := a.gen.Load(); g.auth != nil {
				return g.auth.Robots
			}
			return nil
		}
		if err := a.metrics.Register(newRobotExpiry(robots)); err != nil {
			return fmt.Errorf("register robot metrics: %w", err)
		}
	}
	if a.opts.TokenOnly {
		return nil
	}
	var err error
	a.stored, err = newStoredGauges(a.metrics)
	return err
}

// metricsRoute is /metrics on the registry port: a pointer to
// http.metricsAddr when metrics have a listener of their own, else the
// exposition, behind auth when auth is on.
func (a *App) metricsRoute() http.Handler {
	switch {
	case a.cfg.HTTP.MetricsAddr != "":
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			api.WriteError(w, r, a.log, api.Status(http.StatusNotFound, "UNSUPPORTED", "metrics are served on their own listener (http.metricsAddr)"))
		})
	case a.cfg.Auth.Enabled:
		return a.guardMetrics(a.metricsHandler())
	}
	return a.metricsHandler()
}
