// Package app is the only wiring package: it turns a configuration into
// components and an HTTP server. Only cmd/ imports it.
package app

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/handlers"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/front"
	"github.com/portcullis/portcullis/internal/gc"
	"github.com/portcullis/portcullis/internal/metadb"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/replicate"
	"github.com/portcullis/portcullis/internal/scanner"
	"github.com/portcullis/portcullis/internal/server"
	"github.com/portcullis/portcullis/replication"
)

// App is a configured registry: its components and the HTTP handler over them.
type App struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *metadb.DB
	driver  storagedriver.StorageDriver
	dist    *handlers.App
	front   *front.Handler
	handler http.Handler
	metrics *prometheus.Registry
	auth    *authParts       // nil when auth is off
	scanner *scanner.Service // nil in token-only mode
	caches  *cache.Set       // nil without pull-through caches
	// Garbage collection: this replica's markers, pull times and
	// background collector (nil in token-only mode).
	marks     *gc.Marks
	pulls     *gc.Pulls
	collector *gc.Collector
	gcMetrics *gc.Metrics
	// Remotes (built once) and replication (nil without rules).
	remotes       map[string]*replication.Remote
	observeRemote func(remote string) func(replication.Request)
	replicator    *replicate.Service
	opts          Options
}

// Options are the run-time choices that are not configuration.
type Options struct {
	// TokenOnly serves the token service alone (and health and metrics),
	// for sites that put one token service in front of several registries.
	TokenOnly bool
}

// New builds the registry described by cfg (already provisioned and
// validated). Close releases what it opened.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (*App, error) {
	if err := registerWithDistribution(); err != nil {
		return nil, fmt.Errorf("register with distribution: %w", err)
	}
	routeDistributionLogs(log, log.Enabled(ctx, slog.LevelDebug))

	db, err := metadb.Open(cfg.MetadataPath())
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: log, db: db, opts: opts}
	if err := a.build(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return a, nil
}

func (a *App) build(ctx context.Context) error {
	cfg := a.cfg
	driver, err := newDriver(ctx, cfg)
	if err != nil {
		return err
	}
	a.driver = driver
	a.metrics = prometheus.NewRegistry()
	if cfg.Auth.Enabled {
		if a.auth, err = a.buildAuth(driver); err != nil {
			return err
		}
	}

	mux := http.NewServeMux()
	if a.opts.TokenOnly {
		if a.auth == nil {
			return errors.New("--token-only needs auth.enabled: true")
		}
	} else if err := a.buildRegistry(ctx, mux); err != nil {
		return err
	}

	reg := a.metrics
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := server.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	// distribution's own metrics (storage actions, caches) live in the
	// default registry; serve both without serving anything else of it.
	gatherers := prometheus.Gatherers{reg, distributionGatherer{}}
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", a.ready)
	if a.auth != nil {
		mux.Handle("/token", a.auth.Service)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, r, a.log, errcode.Error{Code: errcode.ErrorCodeUnsupported, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	a.handler = server.Wrap(mux, server.Options{Log: a.log, Metrics: metrics, AccessLog: cfg.Log.AccessLogEnabled(),
		Pace: server.BodyPace{MinRate: cfg.HTTP.MinBodyRate, Grace: cfg.HTTP.BodyGrace.D()}})
	return nil
}

// buildRegistry builds the registry core and the /v2/ front handler.
func (a *App) buildRegistry(ctx context.Context, mux *http.ServeMux) error {
	driver := a.driver
	secret, err := a.uploadSecret()
	if err != nil {
		return err
	}
	// Our view of the same storage (shared driver, so it sees exactly what
	// distribution stores), with the referrers index and sha512 links that
	// distribution's repository middleware also uses.
	indexed, err := newIndexedRepos(ctx, driver)
	if err != nil {
		return fmt.Errorf("open storage: %w", err)
	}
	if err := a.buildMarks(); err != nil {
		return err
	}
	indexed.marks = a.marks
	repos, idx := indexed.ns, indexed.idx
	dc := distributionConfig(a.cfg, driver, idx, indexed.links, secret)
	if a.auth != nil {
		dc.Auth = distributionAuth(a.auth.Controller)
	}
	dist, err := newDistributionApp(ctx, dc)
	if err != nil {
		return err
	}
	a.dist = dist

	refs, err := referrers.NewHandler(idx, repos, a.log)
	if err != nil {
		return err
	}
	var opts front.Options
	if a.auth != nil {
		opts.Guard = &front.Guard{Auth: a.auth.Controller, Tags: a.auth.Policy, Repos: repos, Audit: a.auth.audit}
	}
	// Each successful push, tag and delete is recorded in the scan outbox,
	// which the scanner consumes.
	events, err := outbox.New(a.db.Bolt(), "scan")
	if err != nil {
		return err
	}
	gates, err := compileScanGates(a.cfg.Scan)
	if err != nil {
		return err
	}
	so := scanner.Options{Repos: indexed, Refs: refs, Catalog: indexed, Outbox: events,
		Metadata: a.db.Bolt(), Log: a.log, Metrics: a.metrics, Gates: gates}
	if a.cfg.Storage.S3 != nil {
		// Replicas share an S3 bucket (the filesystem backend serves one):
		// each claims in it the images it scans.
		so.Shared = driver
	}
	a.scanner, err = scanner.New(so)
	if err != nil {
		return err
	}
	opts.Events, opts.Log, opts.Reserved = events, a.log, []string{scanner.DBRepository}
	if len(a.cfg.Replication.Rules) > 0 {
		// Each write is recorded for the scanner and for replication.
		replicationEvents, err := outbox.New(a.db.Bolt(), replicate.OutboxName)
		if err != nil {
			return err
		}
		opts.Events = outbox.Fanout{events, replicationEvents}
		if a.replicator, err = a.buildReplication(indexed, refs, opts.Events); err != nil {
			return err
		}
		if err := a.replicator.Follow(replicationEvents); err != nil {
			return err
		}
	}
	if err := a.buildCollector(opts.Events); err != nil {
		return err
	}
	if a.caches, err = a.buildCaches(indexed, refs, events); err != nil {
		return err
	}
	opts.Cache = a.caches
	opts.Collection, opts.Pulls = a.marks, a.pulls
	gate, err := a.buildAdmission(repos, refs)
	if err != nil {
		return err
	}
	apiOpts := api.Options{Documents: a.scanner, Manifests: &admission.Content{Repos: repos, Refs: refs}, Log: a.log}
	if gate != nil {
		opts.Admission, apiOpts.Verdicts = gate, gate
	}
	if a.auth != nil {
		apiOpts.Auth = a.auth.Controller
	}
	if a.caches != nil {
		apiOpts.Caches = a.caches
	}
	apiOpts.Collections = a.collector
	if a.replicator != nil {
		apiOpts.Replication = a.replicator
	}
	fr, err := front.New(dist, refs, repos, opts)
	if err != nil {
		return err
	}
	a.front = fr
	apiOpts.Withheld = fr.Withheld
	apiHandler, err := api.New(apiOpts)
	if err != nil {
		return err
	}
	mux.Handle("/v2/", fr)
	mux.Handle(api.Prefix, apiHandler)
	mux.Handle("/v2", http.RedirectHandler("/v2/", http.StatusMovedPermanently))
	return nil
}

// uploadSecret returns the key that signs upload state: from the configured
// file (shared by replicas), else this node's persistent random key.
func (a *App) uploadSecret() (string, error) {
	if f := a.cfg.HTTP.SecretFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("http.secretFile: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if len(s) < 16 {
			return "", errors.New("http.secretFile: the secret must be at least 16 characters")
		}
		return s, nil
	}
	b, err := a.db.Secret("upload-state", 32)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// distributionGatherer serves only distribution's metric families from the
// default registry.
type distributionGatherer struct{}

func (distributionGatherer) Gather() ([]*dto.MetricFamily, error) { return gatherDistribution() }

// ready answers 200 when the storage backend answers.
func (a *App) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := a.checkStorage(ctx); err != nil {
		a.log.WarnContext(ctx, "storage not ready", "err", err)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "storage unavailable\n")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ok\n")
}

func (a *App) checkStorage(ctx context.Context) error {
	if p, ok := a.driver.(pinger); ok {
		return p.Ping(ctx)
	}
	_, err := a.driver.Stat(ctx, "/")
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return err
	}
	return nil
}

// Handler returns the registry's whole HTTP handler.
func (a *App) Handler() http.Handler { return a.handler }

// Close stops background work and closes the metadata database.
func (a *App) Close() error {
	var errs []error
	if a.dist != nil {
		errs = append(errs, a.dist.Shutdown())
	}
	if a.auth != nil {
		errs = append(errs, a.auth.closeAudit())
	}
	if a.caches != nil {
		// Cache fills and fetches write to the storage and the outbox.
		a.caches.Wait()
	}
	if a.front != nil {
		a.front.Wait() // pull records
	}
	errs = append(errs, a.db.Close())
	return errors.Join(errs...)
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// in-flight requests get the configured grace period. ready, if not nil, is
// called with the listen address once the server accepts connections.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: a.cfg.HTTP.ReadHeaderTimeout.D(),
		IdleTimeout:       a.cfg.HTTP.IdleTimeout.D(),
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	tlsOn := a.cfg.HTTP.TLS.Enabled()
	if tlsOn {
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	// The scanner stops with the server, before the caller closes the
	// metadata database it writes to.
	scanCtx, stopScanner := context.WithCancel(ctx)
	scanDone := make(chan struct{})
	defer func() {
		stopScanner()
		<-scanDone
	}()
	if a.scanner != nil {
		go func() {
			defer close(scanDone)
			if err := a.scanner.Run(scanCtx); err != nil {
				a.log.ErrorContext(ctx, "scanner stopped", "err", err)
			}
		}()
	} else {
		close(scanDone)
	}
	if a.replicator != nil {
		replDone := make(chan struct{})
		defer func() {
			stopScanner()
			<-replDone
		}()
		go func() {
			defer close(replDone)
			if err := a.replicator.Run(scanCtx); err != nil {
				a.log.ErrorContext(ctx, "replication stopped", "err", err)
			}
		}()
	}
	if a.caches != nil {
		go func() {
			if err := a.caches.Run(scanCtx); err != nil {
				a.log.ErrorContext(ctx, "caches stopped", "err", err)
			}
		}()
	}
	a.runGC(scanCtx)
	mirrors, err := a.serveCacheListeners(ctx)
	if err != nil {
		return err
	}
	defer func() {
		for _, m := range mirrors {
			_ = m.Close()
		}
	}()
	ln = server.LimitListener(ln, a.cfg.HTTP.MaxConnsPerAddress)
	errc := make(chan error, 1)
	go func() {
		var err error
		if tlsOn {
			err = hs.ServeTLS(ln, a.cfg.HTTP.TLS.CertFile, a.cfg.HTTP.TLS.KeyFile)
		} else {
			err = hs.Serve(ln)
		}
		errc <- err
	}()
	a.log.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "tls", tlsOn, "storage", a.storageName(),
		"auth", a.cfg.Auth.Enabled, "trust_policies", len(a.cfg.Trust.Policies), "scan_policies", len(a.cfg.Scan.Policies),
		"webhooks", len(a.cfg.Admission.Webhooks), "caches", len(a.cfg.Cache), "replication_rules", len(a.cfg.Replication.Rules), "metadata", a.cfg.MetadataPath())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	grace := a.cfg.HTTP.ShutdownGrace.D()
	a.log.Info("shutting down", "grace", grace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		a.log.Warn("grace period expired, closing remaining connections", "err", err)
		_ = hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// storageName says which storage backend is in effect, for the start-up
// line: the S3 endpoint and bucket, or the filesystem root.
func (a *App) storageName() string {
	if s3 := a.cfg.Storage.S3; s3 != nil {
		endpoint := s3.Endpoint
		if u, err := url.Parse(endpoint); err == nil {
			u.User = nil // never a credential in a log line
			endpoint = u.Redacted()
		}
		return "s3 " + endpoint + "/" + s3.Bucket
	}
	return "filesystem " + a.cfg.FilesystemRoot()
}

// Listen opens the configured listen address.
func (a *App) Listen(ctx context.Context) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return nil, fmt.Errorf("http.addr: %w", err)
	}
	return ln, nil
}
