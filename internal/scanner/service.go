package scanner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// The reserved repository and tag of the vulnerability database.
const (
	DBRepository = "portcullis/vulndb"
	DBTag        = "latest"
)

// Repositories opens repositories through the registry's middleware, so
// that what the scanner stores is indexed as referrers.
type Repositories interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}

// referrerLister lists a subject's referrers.
type referrerLister interface {
	List(ctx context.Context, name string, subject digest.Digest) ([]v1.Descriptor, error)
}

// Catalog lists the registry's repositories, for the reconcile pass.
type Catalog interface {
	Enumerate(ctx context.Context, ingester func(repo string) error) error
}

// Service scans pushed images.
type Service struct {
	repos    Repositories
	refs     referrerLister
	indexer  *scan.Indexer
	pool     *scan.Pool
	box      *outbox.Outbox
	dispatch *outbox.Dispatcher
	policy   scan.Policy
	log      *slog.Logger

	dbw   *dbWatcher
	recon *reconciler

	// rematchMu orders the matching of stored inventories with database
	// changes: a report computed and remembered under it was matched with
	// the current database, or is re-matched by the next rematchAll.
	rematchMu sync.Mutex

	// minScanTimeout is the least time a background scan is given.
	minScanTimeout time.Duration

	claims *claims
	// replicas claims images across the replicas over one storage
	// backend; nil with a single replica.
	replicas *replicaClaims
	store    *metaStore
	gates    Gates
	now      func() time.Time

	scans     *prometheus.CounterVec
	duration  prometheus.Histogram
	findings  *prometheus.CounterVec
	rematches prometheus.Counter
	retries   prometheus.Counter
	restored  prometheus.Counter
	// policyResults counts the judgements of stored reports by their
	// repositories' scan policies.
	policyResults *prometheus.CounterVec
	audit         *audit.Log
}

// Options are a Service's dependencies.
type Options struct {
	Repos Repositories
	Refs  referrerLister
	// Catalog lists repositories for the reconcile pass.
	Catalog Catalog
	// Outbox holds the pushes to scan; the service consumes it.
	Outbox   *outbox.Outbox
	Metadata *bolt.DB
	Log      *slog.Logger
	Metrics  prometheus.Registerer
	// Workers bounds concurrent scans; default 2.
	Workers int
	// Gates are the scan policies per repository; nil: none.
	Gates Gates
	// Now is the clock of reports, verdicts and gates; default time.Now.
	Now func() time.Time
	// PollInterval is how often the imported vulnerability database is
	// checked for a new one; default 5s.
	PollInterval time.Duration
	// Shared is the storage several replicas share, where each claims
	// the images it scans so that an image is scanned once, not once per
	// replica; nil for a registry that runs alone.
	Shared SharedStorage
	// Audit receives a line for each stored report that fails its
	// repository's scan policy; nil: none.
	Audit *audit.Log
}

// New returns a scanner service; Run starts it. It returns an error when
// a dependency is missing or a metric cannot
// be registered.
func New(o Options) (*Service, error) {
	if o.Repos == nil || o.Refs == nil || o.Catalog == nil || o.Outbox == nil || o.Metadata == nil || o.Log == nil || o.Metrics == nil {
		return nil, errors.New("scanner: repositories, referrers, catalog, outbox, metadata, logger and metrics are required")
	}
	cache, err := newLayerCache(o.Metadata)
	if err != nil {
		return nil, fmt.Errorf("scanner: layer cache: %w", err)
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	pool, err := scan.NewPool(scan.PoolOptions{Workers: o.Workers, QueueSize: 256, Logger: o.Log})
	if err != nil {
		return nil, err
	}
	s := &Service{minScanTimeout: defaultScanTimeout,
		repos: o.Repos, refs: o.Refs, pool: pool, box: o.Outbox, log: o.Log,
		store: &metaStore{db: o.Metadata}, gates: o.Gates, now: o.Now, claims: newClaims(), audit: o.Audit,
		policyResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "policy_results_total",
			Help: "Stored scan reports judged by their repository's scan policy, by policy, mode (enforce, quarantine, audit) and result (passed, failed).",
		}, []string{"policy", "mode", "result"}),
		rematches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "rematched_reports_total",
			Help: "New reports stored because a new vulnerability database changed an image's findings.",
		}),
		indexer: scan.NewIndexer(scan.IndexOptions{Cache: cache}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "scans_total",
			Help: "Image scans by result (ok, failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "duration_seconds",
			Help: "Time to scan one image.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "findings_total",
			Help: "Findings of completed scans by severity.",
		}, []string{"severity"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "outbox_retries_total",
			Help: "Scan outbox entries kept for a retry after a transient failure (storage, queue full).",
		}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "restored_inventories_total",
			Help: "Scanned images the metadata database did not know (lost, or scanned by another replica) whose inventory was read back from storage and re-matched.",
		}),
	}
	if o.Shared != nil {
		if s.replicas, err = newReplicaClaims(o.Shared, o.Now); err != nil {
			return nil, err
		}
	}
	s.dbw = newDBWatcher(s.open, o.Log, o.PollInterval)
	s.recon = &reconciler{catalog: o.Catalog, open: s.open, store: s.store, box: o.Outbox, claims: s.claims,
		verdict: s.hasVerdict, loaded: s.dbw.Loaded(), log: o.Log, now: o.Now,
		runs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "reconcile_runs_total",
			Help: "Completed reconcile passes over the registry's manifests.",
		}),
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "reconcile_enqueued_total",
			Help: "Unscanned images the reconcile pass queued for a scan.",
		}),
		kick: make(chan struct{}, 1), queued: map[string]bool{},
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "portcullis", Subsystem: "scan", Name: "outbox_pending",
		Help: "Pushes, tags and deletes waiting in the scan outbox.",
	}, func() float64 { return float64(o.Outbox.Len()) })
	s.dispatch, err = outbox.NewDispatcher(o.Outbox, s.handle, outbox.DispatcherOptions{
		// One scan running and one queued per worker keeps the pool busy.
		Concurrency: 2 * o.Workers, Log: o.Log, Retries: s.retries, Now: o.Now,
	})
	if err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{s.scans, s.duration, s.findings, s.rematches, s.retries, s.recon.runs, s.recon.enqueued, s.restored, s.policyResults, pending} {
		if err := o.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	if err := s.observeState(o.Metrics, o.Metadata); err != nil {
		return nil, err
	}
	return s, nil
}

// defaultPollInterval is how often a running registry looks for a newly
// imported vulnerability database.
const defaultPollInterval = 5 * time.Second

// Run loads the database and checks for a newer one every PollInterval,
// consumes the outbox, reconciles the registry's manifests with the stored
// reports once a database is loaded, after each new one and every
// reconcileInterval, and runs the scan workers, until ctx is done. It
// returns when all have stopped.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.dbw.Run(ctx, s.afterPoll) })
	wg.Go(func() { s.recon.Run(ctx) })
	wg.Go(func() {
		if err := s.dispatch.Run(ctx); err != nil {
			s.log.ErrorContext(ctx, "scan outbox stopped", "err", err)
		}
	})
	err := s.pool.Run(ctx)
	wg.Wait()
	return err
}

func (s *Service) open(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, err
	}
	return s.repos.Repository(ctx, named)
}

// reloadDB polls for the database (loading it when its tag moved) and
// then does what follows a poll (afterPoll).
func (s *Service) reloadDB(ctx context.Context) error {
	d, changed, first, err := s.dbw.poll(ctx)
	if err != nil || d == "" {
		return err
	}
	return s.afterPoll(ctx, d, changed, first)
}

// afterPoll follows a poll that found database d: a newly loaded one
// wakes the pushes waiting for a database; the remembered images are
// re-matched with it unless that is done (the matched database is the
// loaded one): a re-match that failed is retried at the next poll.
func (s *Service) afterPoll(ctx context.Context, d digest.Digest, changed, first bool) error {
	if changed {
		s.dispatch.Wake() // pushes waiting for a database
	}
	// Re-match what was scanned with another database, also across restarts.
	prev := s.store.matchedDB()
	if prev == d {
		return nil
	}
	if prev != "" {
		if err := s.rematchAll(ctx); err != nil {
			return err
		}
	}
	if !first {
		// Scanned images this node does not remember (a lost metadata
		// database, another replica's scans) are re-matched by the reconcile
		// pass; the first database starts one anyway.
		s.recon.Kick()
	}
	return s.store.setMatchedDB(d)
}

func (s *Service) database() *vulndb.DB {
	db, _, _ := s.dbw.Current()
	return db
}

// matching returns the loaded database's matcher, nil before one is loaded.
func (s *Service) matching() *scan.Matcher {
	_, m, _ := s.dbw.Current()
	return m
}

// push stores an artifact's blobs then its manifest (tagged when tag is set).
func push(ctx context.Context, repo distribution.Repository, a *artifact.Artifact, tag string) error {
	bs := repo.Blobs(ctx)
	for _, b := range a.Blobs {
		if _, err := bs.Stat(ctx, b.Digest); err == nil {
			continue
		}
		rc, err := b.Open()
		if err != nil {
			return err
		}
		w, err := bs.Create(ctx)
		if err != nil {
			rc.Close()
			return err
		}
		_, err = w.ReadFrom(rc)
		rc.Close()
		if err != nil {
			_ = w.Cancel(ctx)
			return err
		}
		if _, err := w.Commit(ctx, v1.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size}); err != nil {
			_ = w.Cancel(ctx) // what the failed commit left, as distribution's handler does
			return err
		}
	}
	m, _, err := distribution.UnmarshalManifest(a.Descriptor.MediaType, a.Manifest)
	if err != nil {
		return err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return err
	}
	var opts []distribution.ManifestServiceOption
	if tag != "" {
		opts = append(opts, distribution.WithTag(tag))
	}
	if _, err := ms.Put(ctx, m, opts...); err != nil {
		return err
	}
	if tag != "" {
		return repo.Tags(ctx).Tag(ctx, tag, a.Descriptor)
	}
	return nil
}

// ImportDB packs the OSV bundle in dir as an artifact and stores it as
// portcullis/vulndb:latest. It returns the manifest digest.
func ImportDB(ctx context.Context, repos Repositories, dir string) (digest.Digest, *artifact.DBConfig, error) {
	a, cfg, err := artifact.PackDB(ctx, dir, artifact.PackOptions{})
	if err != nil {
		return "", nil, err
	}
	named, _ := reference.WithName(DBRepository)
	repo, err := repos.Repository(ctx, named)
	if err != nil {
		return "", nil, err
	}
	if err := push(ctx, repo, a, DBTag); err != nil {
		return "", nil, fmt.Errorf("store the database: %w", err)
	}
	return a.Descriptor.Digest, cfg, nil
}
