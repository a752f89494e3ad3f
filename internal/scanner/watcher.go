package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// dbWatcher loads the vulnerability database imported as
// DBRepository:DBTag, and loads it again when the tag moves.
type dbWatcher struct {
	open     func(ctx context.Context, name string) (distribution.Repository, error)
	log      *slog.Logger
	interval time.Duration

	mu      sync.RWMutex
	db      *vulndb.DB
	matcher *scan.Matcher // db's, remembering the records of each package version matched
	index   digest.Digest // manifest digest of the loaded database
	loaded  chan struct{} // closed once a database is loaded
	once    sync.Once
}

func newDBWatcher(open func(ctx context.Context, name string) (distribution.Repository, error), log *slog.Logger, interval time.Duration) *dbWatcher {
	return &dbWatcher{open: open, log: log, interval: interval, loaded: make(chan struct{})}
}

// Current returns the loaded database, its matcher and its manifest
// digest; all are zero before a database is loaded.
func (w *dbWatcher) Current() (*vulndb.DB, *scan.Matcher, digest.Digest) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.db, w.matcher, w.index
}

// Loaded returns a channel closed once a database is loaded.
func (w *dbWatcher) Loaded() <-chan struct{} { return w.loaded }

// Run polls for the database every interval until ctx is done, calling
// polled after each poll that found one: d is its manifest digest, changed
// whether this poll loaded it, and first whether it is the first database
// loaded. An error of the poll or of polled is logged.
func (w *dbWatcher) Run(ctx context.Context, polled func(ctx context.Context, d digest.Digest, changed, first bool) error) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		d, changed, first, err := w.poll(ctx)
		if err == nil && d != "" {
			err = polled(ctx, d, changed, first)
		}
		if err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "load vulnerability database", "repo", DBRepository, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll loads the database artifact when its tag moved. It returns the
// tagged manifest digest ("" when no database is imported), whether it
// loaded it now, and whether that is the first database loaded.
func (w *dbWatcher) poll(ctx context.Context) (d digest.Digest, changed, first bool, err error) {
	repo, err := w.open(ctx, DBRepository)
	if err != nil {
		return "", false, false, err
	}
	desc, err := repo.Tags(ctx).Get(ctx, DBTag)
	var unknown distribution.ErrTagUnknown
	var repoUnknown distribution.ErrRepositoryUnknown
	if errors.As(err, &unknown) || errors.As(err, &repoUnknown) {
		return "", false, false, nil // no database imported yet: nothing is scanned
	}
	if err != nil {
		return "", false, false, err
	}
	if _, _, loaded := w.Current(); loaded == desc.Digest {
		return desc.Digest, false, false, nil
	}
	first, err = w.load(ctx, repo, desc.Digest)
	if err != nil {
		return "", false, false, err
	}
	return desc.Digest, true, first, nil
}

// load loads database manifest d of repo (DBRepository) and makes it the
// one scans match against; first reports whether it is the first one
// loaded.
func (w *dbWatcher) load(ctx context.Context, repo distribution.Repository, d digest.Digest) (first bool, err error) {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return false, err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return false, err
	}
	_, payload, err := m.Payload()
	if err != nil {
		return false, err
	}
	blobs := repo.Blobs(ctx)
	db, err := artifact.LoadDB(ctx, func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, d)
	}, payload, artifact.LoadOptions{})
	if err != nil {
		return false, fmt.Errorf("load %s@%s: %w", DBRepository, d, err)
	}
	w.mu.Lock()
	first = w.db == nil
	w.db, w.matcher, w.index = db, scan.NewMatcher(db), d
	w.mu.Unlock()
	w.log.InfoContext(ctx, "vulnerability database loaded", "digest", d)
	w.once.Do(func() { close(w.loaded) })
	return first, nil
}
