package gc

import (
	"context"
	"errors"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// pullEvery is how often a manifest's pull time is written at most.
const pullEvery = time.Hour

// pullsRemembered bounds the pulls a replica remembers having recorded.
const pullsRemembered = 100000

// Pulls records when manifests were last pulled, in the backend, at most
// once an hour per manifest, so that every replica's retention and
// eviction agree.
type Pulls struct {
	driver storagedriver.StorageDriver
	now    func() time.Time
	mu     sync.Mutex
	seen   map[string]time.Time
}

// NewPulls returns a recorder over driver.
func NewPulls(driver storagedriver.StorageDriver, now func() time.Time) (*Pulls, error) {
	if driver == nil {
		return nil, errors.New("pull times: nil storage driver")
	}
	if now == nil {
		now = time.Now
	}
	return &Pulls{driver: driver, now: now, seen: map[string]time.Time{}}, nil
}

// Record notes a pull of manifest d of repo.
func (p *Pulls) Record(ctx context.Context, repo string, d digest.Digest) error {
	if p == nil {
		return nil
	}
	key := repo + "@" + d.String()
	now := p.now()
	p.mu.Lock()
	last, ok := p.seen[key]
	if ok && now.Sub(last) < pullEvery {
		p.mu.Unlock()
		return nil
	}
	if len(p.seen) >= pullsRemembered {
		clear(p.seen)
	}
	p.seen[key] = now
	p.mu.Unlock()
	fi, err := p.driver.Stat(ctx, pullPath(repo, d))
	var nf storagedriver.PathNotFoundError
	switch {
	case err == nil && now.Sub(fi.ModTime()) < pullEvery:
		return nil // another replica recorded it
	case err != nil && !errors.As(err, &nf):
		return err
	}
	return p.driver.PutContent(ctx, pullPath(repo, d), []byte(now.UTC().Format(time.RFC3339)))
}
