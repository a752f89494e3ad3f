package gc

import (
	"context"
	"errors"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// PullEvery is how often a manifest's pull time is written at most, unless
// a shorter interval is asked for.
const PullEvery = time.Hour

// pullsRemembered bounds the pulls a replica remembers having recorded.
const pullsRemembered = 100000

// Pulls records when manifests were last pulled, in the backend, so that
// every replica's retention (pulledWithin) and cache eviction (maxAge,
// maxSize) agree. Each manifest's time is written at most once per
// interval.
type Pulls struct {
	driver storagedriver.StorageDriver
	now    func() time.Time
	every  time.Duration
	mu     sync.Mutex
	seen   map[string]time.Time
}

// NewPulls returns a recorder over driver that writes a manifest's pull
// time at most once per every (default PullEvery).
func NewPulls(driver storagedriver.StorageDriver, now func() time.Time, every time.Duration) (*Pulls, error) {
	if driver == nil {
		return nil, errors.New("pull times: nil storage driver")
	}
	if now == nil {
		now = time.Now
	}
	if every <= 0 {
		every = PullEvery
	}
	return &Pulls{driver: driver, now: now, every: every, seen: map[string]time.Time{}}, nil
}

// Due reports whether Record would write a pull of manifest d of repo now:
// false when this recorder noted one within its interval, which it knows
// without reading the backend.
func (p *Pulls) Due(repo string, d digest.Digest) bool {
	if p == nil {
		return false
	}
	now := p.now()
	p.mu.Lock()
	last, ok := p.seen[repo+"@"+d.String()]
	p.mu.Unlock()
	return !ok || now.Sub(last) >= p.every
}

// Record notes a pull of manifest d of repo now, with the recorder's
// interval.
func (p *Pulls) Record(ctx context.Context, repo string, d digest.Digest) error {
	return p.RecordEvery(ctx, repo, d, p.every)
}

// RecordEvery notes a pull of manifest d of repo now, written unless a
// time less than every old is there (every is capped by the recorder's
// own interval).
func (p *Pulls) RecordEvery(ctx context.Context, repo string, d digest.Digest, every time.Duration) error {
	if p == nil {
		return nil
	}
	every = min(every, p.every)
	key := repo + "@" + d.String()
	now := p.now()
	p.mu.Lock()
	last, ok := p.seen[key]
	if ok && now.Sub(last) < every {
		p.mu.Unlock()
		return nil
	}
	if len(p.seen) >= pullsRemembered {
		clear(p.seen)
	}
	p.seen[key] = now
	p.mu.Unlock()
	if last, err := p.Last(ctx, repo, d); err != nil {
		return err
	} else if now.Sub(last) < every {
		return nil // another replica recorded it
	}
	return p.driver.PutContent(ctx, pullPath(repo, d), []byte(now.UTC().Format(time.RFC3339)))
}

// Last returns when manifest d of repo was last recorded as pulled (the
// recorder's clock, kept in the object); zero when never.
func (p *Pulls) Last(ctx context.Context, repo string, d digest.Digest) (time.Time, error) {
	b, err := p.driver.GetContent(ctx, pullPath(repo, d))
	var nf storagedriver.PathNotFoundError
	switch {
	case errors.As(err, &nf):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339, string(b))
	if err != nil {
		return time.Time{}, nil // unreadable: as never
	}
	return t, nil
}

// Forget removes manifest d of repo's pull time.
func (p *Pulls) Forget(ctx context.Context, repo string, d digest.Digest) {
	_ = p.driver.Delete(ctx, pullPath(repo, d))
	p.mu.Lock()
	delete(p.seen, repo+"@"+d.String())
	p.mu.Unlock()
}
