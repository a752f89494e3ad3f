package scanner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"sync/atomic"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/lease"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// SharedStorage holds the small objects through which the replicas over
// one storage backend agree on who scans an image: a subset of
// storagedriver.StorageDriver.
type SharedStorage interface {
	PutContent(ctx context.Context, path string, content []byte) error
	GetContent(ctx context.Context, path string) ([]byte, error)
	List(ctx context.Context, path string) ([]string, error)
	Delete(ctx context.Context, path string) error
}

var _ SharedStorage = storagedriver.StorageDriver(nil)

// claimsRoot is where replicas claim the images they scan:
//
//	/portcullis/scanner/claims/<repository>/<algorithm>/<hex>/<holder>-<n>
//
// each file a claimRecord. A claim is written before a scan and deleted
// after it; one its holder left behind (it crashed) expires.
const claimsRoot = "/portcullis/scanner/claims"

// claimMargin is added to a scan's time limit to make its claim's
// lifetime: the report is stored and the claim deleted within it.
const claimMargin = time.Minute

// errScannedElsewhere is returned by the outbox consumer for an image
// another replica is scanning: the entry is retried, and then finds that
// replica's report.
var errScannedElsewhere = errors.New("being scanned by another replica")

type claimRecord struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// replicaClaims makes sure that one replica at a time scans an image,
// with no lock service: a replica writes its own claim file, then lists
// the image's claims, and goes ahead only when no other unexpired claim
// is there. Of two replicas claiming at once, the second to list sees the
// first one's file (the backend lists what was written before), so at
// most one goes ahead; both may back off, and retry later.
type replicaClaims struct {
	store  SharedStorage
	holder string // this process
	n      atomic.Uint64
	now    func() time.Time
}

func newReplicaClaims(store SharedStorage, now func() time.Time) (*replicaClaims, error) {
	id, err := lease.ReplicaID()
	if err != nil {
		return nil, fmt.Errorf("replica claims: %w", err)
	}
	return &replicaClaims{store: store, holder: id, now: now}, nil
}

// acquire claims repo@d for ttl. held is false when another replica holds
// an unexpired claim; release must be called when held is true. An error
// is a storage failure.
func (c *replicaClaims) acquire(ctx context.Context, repo string, d digest.Digest, ttl time.Duration) (release func(), held bool, err error) {
	dir := path.Join(claimsRoot, repo, d.Algorithm().String(), d.Encoded())
	mine := path.Join(dir, c.holder+"-"+strconv.FormatUint(c.n.Add(1), 10))
	rec, err := json.Marshal(claimRecord{Holder: c.holder, Until: c.now().Add(ttl).UTC()})
	if err != nil {
		return nil, false, err
	}
	if err := c.store.PutContent(ctx, mine, rec); err != nil {
		return nil, false, fmt.Errorf("claim %s@%s: %w", repo, d, err)
	}
	release = func() { _ = c.store.Delete(context.WithoutCancel(ctx), mine) }
	names, err := c.store.List(ctx, dir)
	if err != nil {
		release()
		return nil, false, fmt.Errorf("list claims of %s@%s: %w", repo, d, err)
	}
	for _, name := range names {
		if name == mine {
			continue
		}
		b, err := c.store.GetContent(ctx, name)
		var nf storagedriver.PathNotFoundError
		if errors.As(err, &nf) {
			continue // released meanwhile
		}
		if err != nil {
			release()
			return nil, false, fmt.Errorf("read claim %s: %w", name, err)
		}
		var other claimRecord
		if json.Unmarshal(b, &other) != nil || !other.Until.After(c.now()) {
			_ = c.store.Delete(ctx, name) // left by a replica that died
			continue
		}
		release()
		return nil, false, nil
	}
	return release, true, nil
}

// storedReport is the newest report stored for an image.
type storedReport struct {
	report  *scan.Report
	created time.Time
	digest  digest.Digest
}

// claimForRematch claims repo@d before a re-match stores a report, so
// that replicas re-matching one image with a new database store one
// report between them, not one each: it waits (briefly: a re-match reads
// no layer) while another replica holds the claim, then returns the
// newest report in storage, which that replica may just have stored
// (found false when there is none or it is unreadable). release must be
// called. An error is a storage failure, or a claim held too long.
func (s *Service) claimForRematch(ctx context.Context, repo string, d digest.Digest) (release func(), newestStored storedReport, found bool, err error) {
	for attempt := 0; ; attempt++ {
		var held bool
		release, held, err = s.replicas.acquire(ctx, repo, d, claimMargin)
		if err != nil {
			return nil, storedReport{}, false, err
		}
		if held {
			break
		}
		if attempt == rematchClaimAttempts {
			return nil, storedReport{}, false, fmt.Errorf("re-match %s@%s: %w", repo, d, errScannedElsewhere)
		}
		select {
		case <-ctx.Done():
			return nil, storedReport{}, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	descs, err := s.refs.List(ctx, repo, d)
	if err != nil {
		release()
		return nil, storedReport{}, false, fmt.Errorf("list referrers of %s@%s: %w", repo, d, err)
	}
	desc, ok := newest(descs, artifact.ArtifactTypeReport)
	if !ok {
		return release, storedReport{}, false, nil
	}
	r, err := s.open(ctx, repo)
	if err != nil {
		release()
		return nil, storedReport{}, false, err
	}
	_, payload, ok, err := readManifest(ctx, r, desc.Digest)
	if err != nil || !ok {
		if err != nil {
			release()
			return nil, storedReport{}, false, err
		}
		return release, storedReport{}, false, nil
	}
	blobs := r.Blobs(ctx)
	fetch := func(ctx context.Context, dg digest.Digest) (io.ReadCloser, error) { return blobs.Open(ctx, dg) }
	report, _, err := artifact.ReadReport(ctx, fetch, payload)
	if err != nil {
		if unusable(err) {
			return release, storedReport{}, false, nil
		}
		release()
		return nil, storedReport{}, false, &storageError{fmt.Errorf("read report %s: %w", desc.Digest, err)}
	}
	created, _ := time.Parse(time.RFC3339, desc.Annotations[v1.AnnotationCreated])
	return release, storedReport{report: report, created: created, digest: desc.Digest}, true, nil
}

// rematchClaimAttempts bounds the waits (100ms each) for another
// replica's re-match of an image.
const rematchClaimAttempts = 300
