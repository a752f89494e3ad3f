package filesystem

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
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

// TestLinksUnderBarrier: under a barrier a new link is written without a
// sync of its own (the barrier's covers it), the same link written again
// is left as it is (the barrier still syncs), and a link whose contents
// change is replaced only by synced contents; without a barrier every link
// is synced. A link found empty (a power cut before its barrier) reads as
// missing; any other empty file reads as empty.
func TestLinksUnderBarrier(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, syncs, _ := countingDriver(t)
	var datasyncs atomic.Int64
	d.datasync = func(f *os.File) error {
		datasyncs.Add(1)
		return fdatasync(f)
	}
	link := "/docker/registry/v2/repositories/team/app/_layers/sha256/abcdef/link"
	write := func(contents string) {
		t.Helper()
		bctx, b := d.WithBarrier(ctx)
		if err := d.PutContent(bctx, link, []byte(contents)); err != nil {
			t.Fatal(err)
		}
		if err := b.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := d.GetContent(ctx, link); err != nil || string(got) != contents {
			t.Fatalf("link = %q, %v; want %q", got, err, contents)
		}
	}
	check := func(step string, wantDatasyncs, wantSyncs int64) {
		t.Helper()
		if n, m := datasyncs.Load(), syncs.Load(); n != wantDatasyncs || m != wantSyncs {
			t.Fatalf("%s: %d content syncs and %d filesystem syncs in all, want %d and %d", step, n, m, wantDatasyncs, wantSyncs)
		}
	}
	write("sha256:abcdef")
	check("new link", 0, 1)
	full := filepath.Join(d.root, link)
	before, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	write("sha256:abcdef")
	check("same link again", 0, 2)
	after, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the same link written again was replaced")
	}
	write("sha256:012345")
	check("changed link", 1, 3)
	if err := d.PutContent(ctx, link, []byte("sha256:abcdef")); err != nil {
		t.Fatal(err)
	}
	check("link without a barrier", 2, 3)
	if names, err := os.ReadDir(filepath.Dir(full)); err != nil || len(names) != 1 {
		t.Errorf("link's directory holds %v (%v), want the link alone", names, err)
	}

	// A link left empty reads as missing, until it is written again.
	if err := os.WriteFile(full, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	var nf storagedriver.PathNotFoundError
	if _, err := d.GetContent(ctx, link); !errors.As(err, &nf) {
		t.Errorf("GetContent of an empty link: %v, want PathNotFoundError", err)
	}
	if _, err := d.Stat(ctx, link); !errors.As(err, &nf) {
		t.Errorf("Stat of an empty link: %v, want PathNotFoundError", err)
	}
	write("sha256:abcdef")
	check("empty link written", 3, 4)
	other := "/docker/registry/v2/repositories/team/app/_uploads/x/startedat"
	if err := os.MkdirAll(filepath.Dir(filepath.Join(d.root, other)), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.root, other), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(ctx, other); err != nil || len(got) != 0 {
		t.Errorf("GetContent of an empty file that is not a link: %q, %v; want empty", got, err)
	}
	if fi, err := d.Stat(ctx, other); err != nil || fi.Size() != 0 {
		t.Errorf("Stat of an empty file that is not a link: %v, %v", fi, err)
	}
}
