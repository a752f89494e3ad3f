package scanner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/config"
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

// Service scans pushed images.
type Service struct {
	repos   Repositories
	refs    referrerLister
	indexer *scan.Indexer
	pool    *scan.Pool
	policy  scan.Policy
	log     *slog.Logger

	mu      sync.RWMutex
	db      *vulndb.DB
	dbIndex digest.Digest // manifest digest of the loaded database

	meta  *bolt.DB
	gates []gatePolicy

	scans     *prometheus.CounterVec
	duration  prometheus.Histogram
	findings  *prometheus.CounterVec
	rematches prometheus.Counter
}

// Options are a Service's dependencies.
type Options struct {
	Repos    Repositories
	Refs     referrerLister
	Metadata *bolt.DB
	Log      *slog.Logger
	Metrics  prometheus.Registerer
	// Workers bounds concurrent scans; default 2.
	Workers int
	// Policies are the scan gates per repository.
	Policies config.Scan
}

// New returns a scanner service; Run starts it.
func New(o Options) (*Service, error) {
	if o.Repos == nil || o.Refs == nil || o.Metadata == nil || o.Log == nil || o.Metrics == nil {
		return nil, errors.New("scanner: repositories, referrers, metadata, logger and metrics are required")
	}
	cache, err := newLayerCache(o.Metadata)
	if err != nil {
		return nil, fmt.Errorf("scanner: layer cache: %w", err)
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	gates, err := compileGates(o.Policies)
	if err != nil {
		return nil, err
	}
	pool, err := scan.NewPool(scan.PoolOptions{Workers: o.Workers, QueueSize: 256, Logger: o.Log})
	if err != nil {
		return nil, err
	}
	s := &Service{
		repos: o.Repos, refs: o.Refs, pool: pool, log: o.Log, meta: o.Metadata, gates: gates,
		rematches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "rematched_reports_total",
			Help: "New reports stored because a new vulnerability database changed an image's findings.",
		}),
		indexer: scan.NewIndexer(scan.IndexOptions{Cache: cache}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "scans_total",
			Help: "Image scans by result (ok, failed, skipped).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "duration_seconds",
			Help: "Time to scan one image.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "scan", Name: "findings_total",
			Help: "Findings of completed scans by severity.",
		}, []string{"severity"}),
	}
	for _, c := range []prometheus.Collector{s.scans, s.duration, s.findings, s.rematches} {
		if err := o.Metrics.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run loads the database, checks for a newer one every interval, and runs
// the scan workers until ctx is done.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if err := s.reloadDB(ctx); err != nil {
				s.log.WarnContext(ctx, "load vulnerability database", "repo", DBRepository, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s.pool.Run(ctx)
}

func (s *Service) open(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, err
	}
	return s.repos.Repository(ctx, named)
}

// reloadDB loads the database artifact when its tag moved.
func (s *Service) reloadDB(ctx context.Context) error {
	repo, err := s.open(ctx, DBRepository)
	if err != nil {
		return err
	}
	desc, err := repo.Tags(ctx).Get(ctx, DBTag)
	var unknown distribution.ErrTagUnknown
	var repoUnknown distribution.ErrRepositoryUnknown
	if errors.As(err, &unknown) || errors.As(err, &repoUnknown) {
		return nil // no database imported yet: nothing is scanned
	}
	if err != nil {
		return err
	}
	s.mu.RLock()
	same := s.dbIndex == desc.Digest
	s.mu.RUnlock()
	if same {
		return nil
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return err
	}
	m, err := ms.Get(ctx, desc.Digest)
	if err != nil {
		return err
	}
	_, payload, err := m.Payload()
	if err != nil {
		return err
	}
	blobs := repo.Blobs(ctx)
	db, err := artifact.LoadDB(ctx, func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, d)
	}, payload, artifact.LoadOptions{})
	if err != nil {
		return fmt.Errorf("load %s@%s: %w", DBRepository, desc.Digest, err)
	}
	s.mu.Lock()
	s.db, s.dbIndex = db, desc.Digest
	s.mu.Unlock()
	s.log.InfoContext(ctx, "vulnerability database loaded", "digest", desc.Digest)
	// Re-match what was scanned with another database, also across restarts.
	if prev := s.matchedDB(); prev != "" && prev != desc.Digest {
		if err := s.rematchAll(ctx); err != nil {
			return err
		}
	}
	return s.setMatchedDB(desc.Digest)
}

func (s *Service) database() *vulndb.DB {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db
}

// Enqueue schedules a scan of repo@d after a push. It never blocks; when
// no database is loaded or the queue is full the push is not scanned now.
func (s *Service) Enqueue(ctx context.Context, repo string, d digest.Digest) {
	if repo == DBRepository || s.database() == nil {
		return
	}
	err := s.pool.Submit(ctx, func(ctx context.Context) {
		if err := s.Scan(ctx, repo, d); err != nil {
			s.log.WarnContext(ctx, "scan", "repo", repo, "digest", d, "err", err)
		}
	})
	if err != nil {
		s.scans.WithLabelValues("skipped").Inc()
		s.log.WarnContext(ctx, "scan not queued", "repo", repo, "digest", d, "err", err)
	}
}

// Scan scans repo@d and stores its report, SBOM and inventory as referrers.
func (s *Service) Scan(ctx context.Context, repo string, d digest.Digest) error {
	db := s.database()
	if db == nil {
		return errors.New("no vulnerability database imported")
	}
	start := time.Now()
	r, err := s.open(ctx, repo)
	if err != nil {
		return err
	}
	img, ok, err := openImage(ctx, r, d)
	if err != nil {
		s.scans.WithLabelValues("failed").Inc()
		return err
	}
	if !ok {
		return nil // an index or an artifact
	}
	stored, err := s.indexer.Inventory(ctx, img, d.String())
	if err != nil {
		s.scans.WithLabelValues("failed").Inc()
		if ctx.Err() == nil {
			// The image itself is at fault (corrupt layer, hostile tar):
			// its verdict is "scan failed" with the reason.
			s.recordFailure(repo, d, err)
		}
		return fmt.Errorf("inventory: %w", err)
	}
	report := stored.Report(db, s.policy)
	mt, _ := img.MediaType()
	size, _ := img.Size()
	subject := v1.Descriptor{MediaType: string(mt), Digest: d, Size: size}
	now := time.Now()
	reportArt, err := artifact.ReportArtifact(subject, report, now)
	if err != nil {
		return err
	}
	sbom, err := artifact.SBOM(stored, now)
	if err != nil {
		return err
	}
	sbomArt, err := artifact.SBOMArtifact(subject, sbom, now)
	if err != nil {
		return err
	}
	for _, a := range []*artifact.Artifact{reportArt, sbomArt} {
		if err := push(ctx, r, a, ""); err != nil {
			s.scans.WithLabelValues("failed").Inc()
			return fmt.Errorf("store %s: %w", a.Descriptor.ArtifactType, err)
		}
	}
	if err := s.remember(repo, scanned{Subject: subject, Inventory: stored, Report: report}); err != nil {
		s.log.WarnContext(ctx, "remember scanned image", "repo", repo, "digest", d, "err", err)
	}
	s.scans.WithLabelValues("ok").Inc()
	s.duration.Observe(time.Since(start).Seconds())
	for _, f := range report.Findings {
		s.findings.WithLabelValues(strings.ToLower(string(f.Severity.Level))).Inc()
	}
	return nil
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

// ServeDocument answers GET .../manifests/<digest>/vulnerabilities (the
// newest report) and .../sbom (the newest CycloneDX SBOM) for repo@d.
func (s *Service) ServeDocument(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest, what string) {
	ctx := r.Context()
	artifactType := artifact.ArtifactTypeReport
	if what == "sbom" {
		artifactType = artifact.ArtifactTypeSBOM
	}
	payload, ok, err := s.latest(ctx, repo, d, artifactType)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithMessage("could not read the image's "+what))
		return
	}
	if !ok {
		if reason := s.failure(repo, d); reason != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			_ = json.NewEncoder(w).Encode(map[string]string{"verdict": "scan failed", "reason": reason})
			return
		}
		msg := "no " + what + " for " + repo + "@" + d.String() + " yet"
		if s.database() == nil {
			msg += ": no vulnerability database has been imported (registry vulndb import DIR)"
		}
		_ = errcode.ServeJSON(w, errcode.ErrorCodeManifestUnknown.WithMessage(msg))
		return
	}
	rp, err := s.open(ctx, repo)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeNameInvalid.WithMessage(err.Error()))
		return
	}
	var man v1.Manifest
	if json.Unmarshal(payload, &man) != nil || len(man.Layers) == 0 {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithMessage("malformed "+what+" artifact"))
		return
	}
	doc, err := rp.Blobs(ctx).Get(ctx, man.Layers[0].Digest)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeBlobUnknown)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.Copy(w, bytes.NewReader(doc))
}
