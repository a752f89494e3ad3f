package scanner

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
)

func TestReplicaClaims(t *testing.T) {
	ctx := context.Background()
	store := inmemory.New()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, err := newReplicaClaims(store, clock)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newReplicaClaims(store, clock)
	d := digest.FromString("image")

	releaseA, held, err := a.acquire(ctx, "team/app", d, time.Minute)
	if err != nil || !held {
		t.Fatalf("first claim: held %v, %v", held, err)
	}
	if _, held, err := b.acquire(ctx, "team/app", d, time.Minute); err != nil || held {
		t.Fatalf("a second replica claimed an image being scanned: held %v, %v", held, err)
	}
	if _, held, _ := b.acquire(ctx, "team/other", d, time.Minute); !held {
		t.Error("a claim on one repository blocks the same digest in another")
	}
	releaseA()
	releaseB, held, err := b.acquire(ctx, "team/app", d, time.Minute)
	if err != nil || !held {
		t.Fatalf("claim after the release: held %v, %v", held, err)
	}
	// b dies holding its claim: once it expires, another replica goes on.
	_ = releaseB
	if _, held, _ := a.acquire(ctx, "team/app", d, time.Minute); held {
		t.Fatal("claimed while another replica's claim is valid")
	}
	now = now.Add(2 * time.Minute)
	if _, held, err := a.acquire(ctx, "team/app", d, time.Minute); err != nil || !held {
		t.Fatalf("an expired claim still blocks: held %v, %v", held, err)
	}
}

// TestReplicaClaimsConcurrent: of many replicas claiming one image at
// once, again and again, never two hold it together.
func TestReplicaClaimsConcurrent(t *testing.T) {
	ctx := context.Background()
	store := inmemory.New()
	d := digest.FromString("image")
	var holding, overlaps, wins atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		c, err := newReplicaClaims(store, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for range 200 {
				release, held, err := c.acquire(ctx, "team/app", d, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if !held {
					continue
				}
				wins.Add(1)
				if holding.Add(1) > 1 {
					overlaps.Add(1)
				}
				time.Sleep(10 * time.Microsecond)
				holding.Add(-1)
				release()
			}
		})
	}
	wg.Wait()
	if overlaps.Load() > 0 {
		t.Errorf("two replicas held one claim together %d times", overlaps.Load())
	}
	if wins.Load() == 0 {
		t.Error("no replica ever held the claim")
	}
}
