// Package app is the only wiring package: it turns a configuration into
// components and an HTTP server. Only cmd/ imports it.
package app

import (
	"context"
	"crypto/sha256"
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/handlers"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis/portcullis/auth/audit"
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
	// cfg is the configuration at start: what cannot change live is read
	// from it; what can is read from the current generation.
	cfg    *config.Config
	log    *slog.Logger
	db     *metadb.DB
	driver storagedriver.StorageDriver
	// barriers defer the filesystem's syncs of a write request to its
	// end; nil on S3.
	barriers front.Barriers
	// offsets take what clients say of the uploads they resume (S3).
	offsets front.UploadOffsets
	dist    *handlers.App
	handler http.Handler
	metrics *prometheus.Registry
	// gen is the generation served now; reloadMu serializes reloads and
	// guards refused, the watch's sum of the files the last refused reload
	// read.
	gen      atomic.Pointer[generation]
	reloadMu sync.Mutex
	refused  [sha256.Size]byte
	reloads  *reloadMetrics
	certs    *server.Certificate // nil without TLS
	// audit is the audit log (nil when auth is off or it has no file).
	audit      *audit.Log
	closeAudit func() error
	core       *core            // nil in token-only mode
	scanner    *scanner.Service // nil in token-only mode
	caches     *cache.Set       // nil without pull-through caches
	recorder   *outbox.Recorder // clients' writes, into the outboxes; nil in token-only mode
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
	// stored is what the storage holds, counted on a schedule (nil in
	// token-only mode).
	stored *storedGauges
	opts   Options
}

// core is what every generation's routes share beside distribution: the
// referrers API, storage, the event outbox and who pushed what.
type core struct {
	refs    *referrers.Handler
	repos   distribution.Namespace
	content *admission.Content
	events  front.Events
	pushers *admission.Pushers
	stored  *storedContent
	// pullSlots bound the pull records every generation's front handler
	// writes in the background.
	pullSlots front.PullSlots
	// blobs opens blobs for the front handler; nil on S3 with redirects.
	blobs front.BlobFiles
}

// Options are the run-time choices that are not configuration.
type Options struct {
	// TokenOnly serves the token service alone (and health and metrics),
	// for sites that put one token service in front of several registries.
	TokenOnly bool
	// Load reads the configuration again for a reload, provisioned and
	// validated, with the same command-line overrides; nil: the
	// configuration cannot be reloaded.
	Load func() (*config.Config, error)
	// Version is the build's version, for portcullis_build_info; "" is dev.
	Version string
	// ConfigFile is the file Load reads (named in the start-up line), watched for changes when
	// reload.watch is on; empty: none.
	ConfigFile string
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
		if a.closeAudit != nil {
			_ = a.closeAudit()
		}
		db.Close()
		return nil, err
	}
	return a, nil
}

func (a *App) build(ctx context.Context) error {
	cfg := a.cfg
	a.metrics = prometheus.NewRegistry()
	driver, err := newDriver(ctx, cfg)
	if err != nil {
		return err
	}
	a.barriers, a.offsets = storageHooksOf(driver)
	if driver, err = countStorageErrors(driver, a.metrics); err != nil {
		return err
	}
	a.driver = driver
	if cfg.Auth.Enabled {
		if err := a.openAudit(); err != nil {
			return err
		}
	}
	if a.opts.TokenOnly && !cfg.Auth.Enabled {
		return errors.New("--token-only needs auth.enabled: true")
	}
	if !a.opts.TokenOnly {
		if err := a.buildRegistry(ctx); err != nil {
			return err
		}
	}
	file := a.configFile()
	g, err := a.newGeneration(cfg, nil)
	if err != nil {
		return err
	}
	g.id, g.watched = 1, watchSum(file, g.sums)
	a.gen.Store(g)
	if g.tls != nil {
		a.certs = server.NewCertificate(g.tls, a.log)
	}

	reg := a.metrics
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := a.registerOperatorMetrics(); err != nil {
		return err
	}
	metrics, err := server.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	if a.reloads, err = newReloadMetrics(reg, g); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metricsRoute())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", a.ready)
	if cfg.Auth.Enabled {
		mux.Handle("/token", route(func(g *generation) http.Handler { return g.token }))
	}
	if !a.opts.TokenOnly {
		mux.Handle("/v2/", route(func(g *generation) http.Handler { return g.registry }))
		mux.Handle(api.Prefix, route(func(g *generation) http.Handler { return g.api }))
		mux.Handle("/v2", http.RedirectHandler("/v2/", http.StatusMovedPermanently))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, r, a.log, errcode.Error{Code: errcode.ErrorCodeUnsupported, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	a.handler = server.Wrap(a.serveGeneration(mux), server.Options{Log: a.log, Metrics: metrics, AccessLog: cfg.Log.AccessLogEnabled(),
		Pace: server.BodyPace{MinRate: cfg.HTTP.MinBodyRate, Grace: cfg.HTTP.BodyGrace.D()}})
	return nil
}

// buildRegistry builds the registry core and the services beside it
// (scanner, replication, collector, caches); each generation builds its
// /v2/ front handler over them.
func (a *App) buildRegistry(ctx context.Context) error {
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
	if a.cfg.Auth.Enabled {
		dc.Auth = distributionAuth(liveController{})
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
	// Each successful push, tag and delete is recorded in the scan outbox,
	// which the scanner consumes.
	events, err := outbox.New(a.db.Bolt(), "scan")
	if err != nil {
		return err
	}
	so := scanner.Options{Repos: indexed, Refs: refs, Catalog: indexed, Outbox: events,
		Metadata: a.db.Bolt(), Log: a.log, Metrics: a.metrics, Gates: liveGates{a}}
	if a.audit != nil {
		so.Audit = a.audit
	}
	if a.cfg.Storage.S3 != nil {
		// Replicas share an S3 bucket (the filesystem backend serves one):
		// each claims in it the images it scans.
		so.Shared = driver
	}
	a.scanner, err = scanner.New(so)
	if err != nil {
		return err
	}
	var all front.Events = events
	boxes := []*outbox.Outbox{events}
	if len(a.cfg.Replication.Rules) > 0 {
		// Each write is recorded for the scanner and for replication.
		replicationEvents, err := outbox.New(a.db.Bolt(), replicate.OutboxName)
		if err != nil {
			return err
		}
		all = outbox.Fanout{events, replicationEvents}
		boxes = append(boxes, replicationEvents)
		if a.replicator, err = a.buildReplication(indexed, refs, all); err != nil {
			return err
		}
		if err := a.replicator.Follow(replicationEvents); err != nil {
			return err
		}
	}
	if err := a.buildCollector(all); err != nil {
		return err
	}
	if a.caches, err = a.buildCaches(indexed, refs, events); err != nil {
		return err
	}
	pushers, err := admission.NewPushers(a.db.Bolt())
	if err != nil {
		return err
	}
	// Clients' writes are recorded in the background (a push does not wait
	// for the database); the rest appends as it goes.
	if a.recorder, err = outbox.NewRecorder(a.log, boxes...); err != nil {
		return err
	}
	a.core = &core{refs: refs, repos: repos, content: &admission.Content{Repos: repos, Refs: refs},
		events: a.recorder, pushers: pushers, stored: newStoredContent(indexed, driver), pullSlots: front.NewPullSlots()}
	switch s3 := a.cfg.Storage.S3; {
	case s3 == nil:
		a.core.blobs = blobFiles{driver: driver}
	case !s3.Redirect:
		a.core.blobs = blobObjects{driver: driver}
	}
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
	if a.closeAudit != nil {
		errs = append(errs, a.closeAudit())
	}
	if a.caches != nil {
		// Cache fills and fetches write to the storage and the outbox.
		a.caches.Wait()
	}
	if a.core != nil {
		a.core.pullSlots.Wait() // pull records
	}
	if a.recorder != nil {
		errs = append(errs, a.recorder.Close())
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
	tlsOn := a.certs != nil
	if tlsOn {
		hs.TLSConfig = a.tlsConfig()
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
	go a.watch(scanCtx)
	a.runStoredCount(scanCtx)
	if a.cfg.HTTP.MetricsAddr != "" {
		stopMetrics, err := a.serveMetrics(ctx)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
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
			// The certificate comes from the current generation, or
			// from its files once they change (GetCertificate).
			err = hs.ServeTLS(ln, "", "")
		} else {
			err = hs.Serve(ln)
		}
		errc <- err
	}()
	a.log.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "tls", tlsOn, "storage", a.storageName(),
		"config", a.configName(), "auth", a.authMode(), "metrics", a.metricsMode(), "trust_policies", len(a.cfg.Trust.Policies), "scan_policies", len(a.cfg.Scan.Policies),
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

// tlsConfig is the TLS configuration of every listener: the certificate
// of the current generation, or newer files.
func (a *App) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: a.certs.GetCertificate}
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
