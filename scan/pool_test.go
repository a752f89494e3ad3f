package scan

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// countingLayer counts how often a layer's content is opened, and holds each read open for
// a while so that concurrent scans overlap.
type countingLayer struct {
	v1.Layer
	opens *atomic.Int32
}

func (l countingLayer) Uncompressed() (io.ReadCloser, error) {
	l.opens.Add(1)
	time.Sleep(20 * time.Millisecond)
	return l.Layer.Uncompressed()
}

// layersImage is a v1.Image of which Index needs only the layers and the config's DiffIDs.
type layersImage struct {
	v1.Image
	layers []v1.Layer
}

func (i layersImage) Layers() ([]v1.Layer, error) { return i.layers, nil }

func (i layersImage) ConfigFile() (*v1.ConfigFile, error) {
	cf := &v1.ConfigFile{}
	for _, l := range i.layers {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, d)
	}
	return cf, nil
}

func TestIndexerSharesLayers(t *testing.T) {
	t.Parallel()
	var baseOpens, topOpens atomic.Int32
	debian := debianLayers(t)
	base := countingLayer{layerOf(t, debian[0]), &baseOpens}
	tops := make([]v1.Layer, 6)
	for i := range tops {
		tops[i] = countingLayer{layerOf(t, tarBytes(t, file("app/node_modules/lodash/package.json", `{"name":"lodash","version":"4.17.`+string(rune('0'+i))+`"}`))), &topOpens}
	}

	ref, err := Index(t.Context(), layersImage{layers: []v1.Layer{layerOf(t, debian[0]), tops[0]}}, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		cache            LayerCache
		rounds           int
		wantBase, maxTop int32
	}{
		// Six concurrent scans share the base: with the cache, one reads it whatever the
		// timing (without the in-flight sharing, the others would miss the cache while it
		// is read, and read it too); a second round reads nothing.
		{"one round", &countingCache{}, 1, 1, 6},
		{"two rounds", &countingCache{}, 2, 1, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			baseOpens.Store(0)
			topOpens.Store(0)
			ix := NewIndexer(IndexOptions{Cache: tt.cache})
			for range tt.rounds {
				var wg sync.WaitGroup
				errs := make(chan error, len(tops))
				for _, top := range tops {
					wg.Go(func() {
						inv, err := ix.Index(t.Context(), layersImage{layers: []v1.Layer{base, top}})
						if err == nil && len(inv.Packages) != len(ref.Packages) {
							err = errors.New("wrong inventory")
						}
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := baseOpens.Load(); got != tt.wantBase {
				t.Errorf("shared base layer read %d times, want %d", got, tt.wantBase)
			}
			if got := topOpens.Load(); got != tt.maxTop {
				t.Errorf("distinct top layers read %d times, want %d", got, tt.maxTop)
			}
		})
	}
}

func TestIndexerWaiterOutlivesCancelledLeader(t *testing.T) {
	t.Parallel()
	var opens atomic.Int32
	l := countingLayer{layerOf(t, debianLayers(t)[0]), &opens}
	ix := NewIndexer(IndexOptions{Cache: &countingCache{}}) // calls share reads with a cache
	leaderCtx, cancel := context.WithCancel(t.Context())
	cancel() // the leader's read fails at once with context.Canceled
	if _, err := ix.IndexLayer(leaderCtx, l); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled leader: %v", err)
	}
	if _, err := ix.IndexLayer(t.Context(), l); err != nil {
		t.Fatalf("next caller: %v", err)
	}
}

func TestPool(t *testing.T) {
	t.Parallel()
	t.Run("full queue and drop on shutdown", func(t *testing.T) {
		t.Parallel()
		p, err := NewPool(PoolOptions{Workers: 1, QueueSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		var ran atomic.Int32
		job := func(context.Context) { ran.Add(1) }
		for i := range 2 {
			if err := p.Submit(t.Context(), job); err != nil {
				t.Fatalf("submit %d: %v", i, err)
			}
		}
		if err := p.Submit(t.Context(), job); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("third submit: %v, want ErrQueueFull", err)
		}
		if err := p.Do(t.Context(), job); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("do on a full queue: %v, want ErrQueueFull", err)
		}
		if s := p.Stats(); s.Queued != 2 || s.Workers != 1 || s.QueueSize != 2 {
			t.Errorf("stats = %+v", s)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := p.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Submit(t.Context(), job); !errors.Is(err, ErrPoolClosed) {
			t.Errorf("submit after Run: %v", err)
		}
		if err := p.Run(t.Context()); !errors.Is(err, ErrPoolRunning) {
			t.Errorf("second Run: %v", err)
		}
		if ran.Load() != 0 {
			t.Errorf("%d jobs ran on a cancelled pool", ran.Load())
		}
	})

	t.Run("bounded concurrency, Do waits, panics", func(t *testing.T) {
		t.Parallel()
		p, err := NewPool(PoolOptions{Workers: 2, QueueSize: 16})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()

		var cur, peak atomic.Int32
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			err := p.Submit(t.Context(), func(context.Context) {
				defer wg.Done()
				n := cur.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				time.Sleep(5 * time.Millisecond)
				cur.Add(-1)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		if peak.Load() > 2 {
			t.Errorf("%d jobs ran at once, want at most 2", peak.Load())
		}

		var result int
		if err := p.Do(t.Context(), func(context.Context) { result = 42 }); err != nil || result != 42 {
			t.Errorf("Do = %v, result %d", err, result)
		}
		if err := p.Do(t.Context(), func(context.Context) { panic("boom") }); !errors.Is(err, ErrJobPanicked) {
			t.Errorf("panicking job: %v", err)
		}
		if err := p.Submit(t.Context(), func(context.Context) { panic("boom") }); err != nil {
			t.Fatal(err)
		}
		// The worker survived: a later job still runs.
		if err := p.Do(t.Context(), func(context.Context) {}); err != nil {
			t.Errorf("after panic: %v", err)
		}

		// Do's ctx cancels the running job.
		callerCtx, callerCancel := context.WithCancel(t.Context())
		started := make(chan struct{})
		doErr := make(chan error)
		go func() {
			doErr <- p.Do(callerCtx, func(ctx context.Context) { close(started); <-ctx.Done() })
		}()
		<-started
		callerCancel()
		if err := <-doErr; !errors.Is(err, context.Canceled) && err != nil {
			t.Errorf("cancelled Do: %v", err)
		}

		// Shutdown cancels running jobs and Run returns.
		blocked := make(chan struct{})
		if err := p.Submit(t.Context(), func(ctx context.Context) { close(blocked); <-ctx.Done() }); err != nil {
			t.Fatal(err)
		}
		<-blocked
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		if err := p.Do(t.Context(), func(context.Context) {}); !errors.Is(err, ErrPoolClosed) {
			t.Errorf("Do after shutdown: %v", err)
		}
	})

	t.Run("bad options", func(t *testing.T) {
		t.Parallel()
		if _, err := NewPool(PoolOptions{Workers: -1}); err == nil {
			t.Error("negative workers accepted")
		}
	})
}

// TestPoolScansShareLayers runs scans of images that share a base layer through a Pool and
// one Indexer with a cache: the base is read once.
func TestPoolScansShareLayers(t *testing.T) {
	t.Parallel()
	_, db := loadTestDB(t)
	var baseOpens, otherOpens atomic.Int32
	debian := debianLayers(t)
	base := countingLayer{layerOf(t, debian[0]), &baseOpens}
	upper := countingLayer{layerOf(t, debian[1]), &otherOpens}
	ix := NewIndexer(IndexOptions{Cache: &countingCache{}})
	m := NewMatcher(db)
	p, err := NewPool(PoolOptions{Workers: 2, QueueSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go p.Run(ctx)

	var wg sync.WaitGroup
	reports := make([]*Report, 4)
	for i := range reports {
		wg.Go(func() {
			err := p.Do(t.Context(), func(ctx context.Context) {
				inv, err := ix.Index(ctx, layersImage{layers: []v1.Layer{base, upper}})
				if err != nil {
					t.Error(err)
					return
				}
				reports[i] = m.Report(NewStoredInventory(ImageInfo{}, inv), Policy{})
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if baseOpens.Load() != 1 || otherOpens.Load() != 1 {
		t.Errorf("layers read %d and %d times, want once each", baseOpens.Load(), otherOpens.Load())
	}
	for _, r := range reports {
		if r == nil || len(r.Findings) != len(debianWant()) {
			t.Fatalf("report: %+v", r)
		}
	}
}
