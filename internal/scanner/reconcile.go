package scanner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/internal/outbox"
)

// reconciler repairs what the outbox and the metadata database missed,
// by a pass over every manifest of the registry: once a database is
// loaded, after each new database (Kick) and every reconcileInterval.
type reconciler struct {
	catalog Catalog
	open    func(ctx context.Context, name string) (distribution.Repository, error)
	store   *metaStore
	box     *outbox.Outbox
	claims  *claims
	// verdict reports whether an image has a verdict, restoring it from
	// storage when the metadata database does not know it.
	verdict func(ctx context.Context, repo string, d digest.Digest) (bool, error)
	loaded  <-chan struct{}
	log     *slog.Logger
	now     func() time.Time

	runs     prometheus.Counter // completed passes
	enqueued prometheus.Counter // images queued for a scan

	kick chan struct{} // asks for a pass (a new database)

	// queued holds the images (repo@digest) the reconcile pass put in the
	// outbox, until an entry of theirs is done, so that a pass does not
	// queue an image again while it waits (a backlog, a scan retried).
	queuedMu sync.Mutex
	queued   map[string]bool
}

// Kick asks for a reconcile pass; it never blocks.
func (rc *reconciler) Kick() {
	select {
	case rc.kick <- struct{}{}:
	default:
	}
}

// reconcileInterval is how often the reconcile pass runs after the first,
// which runs as soon as a database is loaded.
const reconcileInterval = time.Hour

// Run runs the reconcile pass once a database is loaded, then
// after each new database and every reconcileInterval, until ctx is done.
func (rc *reconciler) Run(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-rc.loaded:
	}
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		if err := rc.reconcile(ctx); err != nil && ctx.Err() == nil {
			rc.log.WarnContext(ctx, "reconcile scans", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-rc.kick:
		}
	}
}

// reconcile repairs what the outbox and the metadata database missed (a
// lost metadata database, an append that failed, another replica's scans):
// it walks every manifest of every repository, tagged or not, queues the
// images that have no verdict, and restores (re-matches from the stored
// inventory) the scanned images the metadata database does not know. An
// image with a report among its referrers in storage is not scanned again,
// so it needs no metadata database. It returns ctx's error or the
// catalog's.
func (rc *reconciler) reconcile(ctx context.Context) error {
	start := rc.now()
	repos, queued := 0, 0
	err := rc.catalog.Enumerate(ctx, func(repo string) error {
		if repo == DBRepository {
			return nil
		}
		repos++
		n, err := rc.reconcileRepo(ctx, repo)
		queued += n
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// One repository's trouble does not stop the pass.
			rc.log.WarnContext(ctx, "reconcile repository", "repo", repo, "err", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk repositories: %w", err)
	}
	rc.runs.Inc()
	rc.log.InfoContext(ctx, "reconciled scans with the registry's manifests", "repos", repos, "queued", queued, "duration", rc.now().Sub(start))
	return nil
}

// reconcileRepo walks every manifest of repo (distribution's
// ManifestEnumerator, which lists _manifests/revisions through the storage
// driver's Walk), queues the images that have no verdict, and returns how
// many it queued. A manifest that cannot be read is logged and skipped.
func (rc *reconciler) reconcileRepo(ctx context.Context, repo string) (int, error) {
	r, err := rc.open(ctx, repo)
	if err != nil {
		return 0, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return 0, err
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return 0, errors.New("the manifest service cannot list manifests")
	}
	seen := map[digest.Digest]bool{} // a manifest with a sha512 alias is listed twice
	queued := 0
	err = en.Enumerate(ctx, func(d digest.Digest) error {
		if seen[d] {
			return nil
		}
		seen[d] = true
		q, err := rc.reconcileManifest(ctx, r, repo, d)
		if q {
			queued++
			rc.enqueued.Inc()
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rc.log.WarnContext(ctx, "reconcile manifest", "repo", repo, "digest", d, "err", err)
		}
		return nil
	})
	var repoUnknown distribution.ErrRepositoryUnknown
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &repoUnknown) || errors.As(err, &nf) {
		return queued, nil // no manifests
	}
	if err != nil {
		return queued, fmt.Errorf("list manifests: %w", err)
	}
	return queued, nil
}

// reconcileManifest queues manifest repo@d for a scan when it is an image
// without a verdict, and reports whether it did. What the metadata
// database knows (a verdict, a manifest that is no image) and an image an
// earlier pass queued that is still waiting are skipped before anything is
// read; an image with a report in storage is restored (hasVerdict).
// Indexes are not expanded: their images are manifests of the repository
// too.
func (rc *reconciler) reconcileManifest(ctx context.Context, r distribution.Repository, repo string, d digest.Digest) (bool, error) {
	if rc.store.knownNotImage(repo, d) || rc.isQueued(repo, d) {
		return false, nil
	}
	release, busy := rc.claims.tryClaim(repo, d)
	if busy != nil {
		return false, nil // being scanned
	}
	done, err := rc.verdict(ctx, repo, d)
	release()
	if err != nil || done {
		return false, err
	}
	mt, payload, found, err := readManifest(ctx, r, d)
	if err != nil || !found {
		return false, err
	}
	if k := classify(mt, payload); k != kindImage {
		return false, rc.store.noteKind(repo, d, k)
	}
	// Marked before the append: the entry may be done before Append returns.
	rc.setQueued(repo, d, true)
	if _, err := rc.box.Append(ctx, outbox.Event{
		Kind: outbox.KindPush, Repository: repo, Digest: d, MediaType: mt, Time: rc.now(),
	}); err != nil {
		rc.setQueued(repo, d, false)
		return false, err
	}
	return true, nil
}

// isQueued reports whether the reconcile pass queued repo@d and no entry of
// it is done since.
func (rc *reconciler) isQueued(repo string, d digest.Digest) bool {
	rc.queuedMu.Lock()
	defer rc.queuedMu.Unlock()
	return rc.queued[string(scannedKey(repo, d))]
}

// setQueued marks repo@d as queued by the reconcile pass (on), or clears
// the mark.
func (rc *reconciler) setQueued(repo string, d digest.Digest, on bool) {
	key := string(scannedKey(repo, d))
	rc.queuedMu.Lock()
	defer rc.queuedMu.Unlock()
	if on {
		rc.queued[key] = true
	} else {
		delete(rc.queued, key)
	}
}
