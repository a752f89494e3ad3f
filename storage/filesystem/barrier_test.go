package filesystem

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// countingDriver returns a driver whose filesystem syncs are counted and
// fail with fail's error when it is set.
func countingDriver(t *testing.T) (d *Driver, syncs *atomic.Int64, fail *atomic.Pointer[error]) {
	t.Helper()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	syncs, fail = new(atomic.Int64), new(atomic.Pointer[error])
	d.group = newGroupSync(func() error {
		syncs.Add(1)
		if e := fail.Load(); e != nil {
			return *e
		}
		return nil
	})
	return d, syncs, fail
}

// TestBarrier: the writes of a request (an upload committed and moved to
// its blob path, a link) sync the filesystem once, at Wait; a request that
// deferred nothing syncs nothing; writes after Wait began sync themselves;
// a failed sync is Wait's error.
func TestBarrier(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, syncs, fail := countingDriver(t)

	bctx, b := d.WithBarrier(ctx)
	w, err := d.Writer(bctx, upload+"/data", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "blob"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(w.Commit(bctx), w.Close()); err != nil {
		t.Fatal(err)
	}
	blob := "/docker/registry/v2/blobs/sha256/ab/abcdef/data"
	link := "/docker/registry/v2/repositories/team/app/_layers/sha256/abcdef/link"
	if err := d.Move(bctx, upload+"/data", blob); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(bctx, link, []byte("sha256:abcdef")); err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load(); n != 0 {
		t.Fatalf("%d filesystem syncs before Wait, want 0", n)
	}
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load(); n != 1 {
		t.Fatalf("%d filesystem syncs after Wait, want 1", n)
	}
	if got, err := d.GetContent(ctx, link); err != nil || string(got) != "sha256:abcdef" {
		t.Errorf("link = %q, %v", got, err)
	}

	// Closed: a late write syncs as it goes and leaves nothing to a Wait.
	if err := d.PutContent(bctx, link, []byte("sha256:abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx); err != nil || syncs.Load() != 1 {
		t.Errorf("second Wait: %v, %d syncs in all; want nil, 1", err, syncs.Load())
	}

	// Nothing deferred: upload state and reads leave the barrier clean.
	bctx, b = d.WithBarrier(ctx)
	if err := d.PutContent(bctx, upload+"/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetContent(bctx, link); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx); err != nil || syncs.Load() != 1 {
		t.Errorf("Wait of a barrier with nothing deferred: %v, %d syncs in all; want nil, 1", err, syncs.Load())
	}

	// A barrier of another driver's filesystem defers nothing here.
	other, otherSyncs, _ := countingDriver(t)
	octx, ob := other.WithBarrier(ctx)
	if err := d.PutContent(octx, link, []byte("sha256:abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := ob.Wait(ctx); err != nil || otherSyncs.Load() != 0 {
		t.Errorf("Wait of another driver's barrier: %v, %d syncs; want nil, 0", err, otherSyncs.Load())
	}

	broken := errors.New("I/O error")
	fail.Store(&broken)
	bctx, b = d.WithBarrier(ctx)
	if err := d.PutContent(bctx, link, []byte("sha256:abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx); !errors.Is(err, broken) {
		t.Errorf("Wait after a failed sync: %v, want %v", err, broken)
	}
}

// TestGroupSync: callers that come while a sync runs share the next one,
// and each returns only after a sync that started after its call.
func TestGroupSync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var started, finished atomic.Int64
	release := make(chan struct{})
	g := newGroupSync(func() error {
		if started.Add(1) == 1 {
			<-release
		}
		finished.Add(1)
		return nil
	})
	first := make(chan error)
	go func() { first <- g.Sync(ctx) }()
	for started.Load() == 0 {
		waitTurn()
	}
	const callers = 5
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			before := started.Load()
			if err := g.Sync(ctx); err != nil {
				errs <- err
				return
			}
			if finished.Load() <= before {
				errs <- errors.New("Sync returned before a sync that started after its call finished")
			}
		})
	}
	for {
		g.mu.Lock()
		n := g.waiting
		g.mu.Unlock()
		if n == callers {
			break
		}
		waitTurn()
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := started.Load(); n != 2 {
		t.Errorf("%d syncs for 1 + %d callers, want 2 (the waiters share one)", n, callers)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	g.mu.Lock()
	g.running = true // a sync in progress that a cancelled caller would wait for
	g.mu.Unlock()
	if err := g.Sync(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with a cancelled context: %v, want context.Canceled", err)
	}
}

// waitTurn lets the goroutines under test run.
func waitTurn() { runtime.Gosched() }
