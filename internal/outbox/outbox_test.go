package outbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newBox(t *testing.T) *Outbox {
	t.Helper()
	box, err := New(openDB(t, filepath.Join(t.TempDir(), "meta.db")), "test")
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func event(i int) Event {
	return Event{
		Kind: KindTag, Repository: "team/app", Tag: fmt.Sprintf("v%d", i),
		Digest:    digest.FromString(fmt.Sprint(i)),
		MediaType: "application/vnd.oci.image.manifest.v1+json",
		Time:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// readAll reads every entry in batches of 3, checking the order.
func readAll(t *testing.T, box *Outbox) []Entry {
	t.Helper()
	var out []Entry
	var after uint64
	for {
		batch, err := box.Read(context.Background(), after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range batch {
			if e.Seq <= after {
				t.Fatalf("entry %d after %d: out of order", e.Seq, after)
			}
			after = e.Seq
		}
		out = append(out, batch...)
		if len(batch) < 3 {
			return out
		}
	}
}

func events(entries []Entry) []Event {
	var out []Event
	for _, e := range entries {
		out = append(out, e.Event)
	}
	return out
}

func TestAppendReadDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := newBox(t)
	var want []Event
	var seqs []uint64
	for i := range 10 {
		seq, err := box.Append(ctx, event(i))
		if err != nil {
			t.Fatal(err)
		}
		if len(seqs) > 0 && seq <= seqs[len(seqs)-1] {
			t.Fatalf("sequence %d after %d", seq, seqs[len(seqs)-1])
		}
		seqs = append(seqs, seq)
		want = append(want, event(i))
	}
	if diff := cmp.Diff(want, events(readAll(t, box))); diff != "" {
		t.Errorf("read (-want +got):\n%s", diff)
	}
	for _, i := range []int{0, 4, 9} {
		if err := box.Delete(ctx, seqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := box.Delete(ctx, seqs[4]); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
	if box.Len() != 7 {
		t.Errorf("Len %d after deleting 3 of 10", box.Len())
	}
	got := readAll(t, box)
	if len(got) != 7 || got[0].Seq != seqs[1] || got[6].Seq != seqs[8] {
		t.Errorf("after deletes: %+v", got)
	}
}

func TestAppendInvalid(t *testing.T) {
	t.Parallel()
	box := newBox(t)
	for name, e := range map[string]Event{
		"no kind":       {Repository: "a", Digest: digest.FromString("x")},
		"unknown kind":  {Kind: "pull", Repository: "a", Digest: digest.FromString("x")},
		"no repository": {Kind: KindPush, Digest: digest.FromString("x")},
		"no reference":  {Kind: KindDelete, Repository: "a"},
	} {
		if _, err := box.Append(context.Background(), e); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrInvalidEvent", name, err)
		}
	}
	if box.Len() != 0 {
		t.Errorf("Len %d", box.Len())
	}
}

func TestSurvivesReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	box, err := New(db, "scan")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 5 {
		if last, err = box.Append(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := box.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	box, err = New(openDB(t, path), "scan")
	if err != nil {
		t.Fatal(err)
	}
	if box.Len() != 4 {
		t.Errorf("Len after reopen %d, want 4", box.Len())
	}
	if diff := cmp.Diff([]Event{event(1), event(2), event(3), event(4)}, events(readAll(t, box))); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	seq, err := box.Append(ctx, event(5))
	if err != nil || seq <= last {
		t.Errorf("append after reopen: seq %d (last %d), %v", seq, last, err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	box := newBox(t)
	const writers, each = 8, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := box.Append(context.Background(), event(w*1000+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got := readAll(t, box)
	if len(got) != writers*each || box.Len() != writers*each {
		t.Fatalf("%d entries read, Len %d, want %d", len(got), box.Len(), writers*each)
	}
	// Each writer's entries keep their order.
	lastOf := map[int]int{}
	for _, e := range got {
		var n int
		fmt.Sscanf(e.Event.Tag, "v%d", &n)
		w, i := n/1000, n%1000
		if prev, ok := lastOf[w]; ok && i <= prev {
			t.Errorf("writer %d: entry %d after %d", w, i, prev)
		}
		lastOf[w] = i
	}
}

// runDispatcher runs d until the test ends and returns a stop function that
// waits for Run to return.
func runDispatcher(t *testing.T, d *Dispatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDispatchInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := newBox(t)
	for i := range 100 { // more than one read batch
		if _, err := box.Append(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string
	d, err := NewDispatcher(box, func(_ context.Context, e Entry) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.Event.Tag)
		return nil
	}, DispatcherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	waitFor(t, "the first 100 entries", func() bool { return box.Len() == 0 })
	// Entries appended while it runs are picked up too.
	for i := 100; i < 103; i++ {
		if _, err := box.Append(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the appended entries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 103 })
	waitFor(t, "the deletions", func() bool { return box.Len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	for i, tag := range got {
		if tag != fmt.Sprintf("v%d", i) {
			t.Fatalf("entry %d handled as %s: out of order", i, tag)
		}
	}
}

func TestDispatchBoundedConcurrency(t *testing.T) {
	t.Parallel()
	box := newBox(t)
	appendEvents(t, box, 200)
	var running, peak atomic.Int32
	// The first handlers wait until four run at once.
	full := make(chan struct{})
	var fullOnce sync.Once
	d, err := NewDispatcher(box, func(ctx context.Context, _ Entry) error {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if n >= 4 {
			fullOnce.Do(func() { close(full) })
		}
		select {
		case <-full:
		case <-ctx.Done():
		}
		return nil
	}, DispatcherOptions{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	waitFor(t, "all entries", func() bool { return box.Len() == 0 })
	if p := peak.Load(); p != 4 {
		t.Errorf("peak concurrency %d, want 4", p)
	}
}

func TestRetryKeepsEntry(t *testing.T) {
	t.Parallel()
	box := newBox(t)
	appendEvents(t, box, 3)
	var mu sync.Mutex
	attempts := map[string]int{}
	var order []string
	d, err := NewDispatcher(box, func(_ context.Context, e Entry) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[e.Event.Tag]++
		if e.Event.Tag == "v1" && attempts["v1"] <= 3 {
			// Still in the outbox while it fails.
			if box.Len() == 0 {
				t.Error("the failing entry is no longer in the outbox")
			}
			return errors.New("storage unavailable")
		}
		order = append(order, e.Event.Tag)
		return nil
	}, DispatcherOptions{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "retries"})})
	if err != nil {
		t.Fatal(err)
	}
	stop := runDispatcher(t, d)
	waitFor(t, "every entry", func() bool { return box.Len() == 0 })
	stop()
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"v0", "v2", "v1"}, order); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if attempts["v1"] != 4 || attempts["v0"] != 1 || attempts["v2"] != 1 {
		t.Errorf("attempts %v", attempts)
	}
	if n := testutil.ToFloat64(d.opts.Retries); n != 3 {
		t.Errorf("retries counted %v, want 3", n)
	}
}

func TestNotReadyPausesUntilWake(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := newBox(t)
	appendEvents(t, box, 5)
	var ready atomic.Bool
	var calls atomic.Int32
	var mu sync.Mutex
	var handled []string
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d, err := NewDispatcher(box, func(_ context.Context, e Entry) error {
		calls.Add(1)
		if !ready.Load() {
			return fmt.Errorf("no database: %w", ErrNotReady)
		}
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, e.Event.Tag)
		return nil
	}, DispatcherOptions{Concurrency: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Hour,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	// The dispatcher's steps, run one at a time: what Run does between
	// two waits.
	st := newRunState()
	results := make(chan result, 2)
	var wg sync.WaitGroup
	d.dispatch(ctx, st, results, &wg)
	d.finish(ctx, st, <-results)
	d.finish(ctx, st, <-results)
	d.dispatch(ctx, st, results, &wg)
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls while not ready: the dispatcher should pause", n)
	}
	if at := st.wakeAt(now); !at.Equal(now.Add(time.Hour)) {
		t.Errorf("paused until %v, want %v", at, now.Add(time.Hour))
	}
	if box.Len() != 5 {
		t.Errorf("Len %d while not ready, want 5", box.Len())
	}
	// New entries while paused wait too, until the pause is over.
	if _, err := box.Append(ctx, event(5)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Minute)
	d.dispatch(ctx, st, results, &wg)
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls while not ready after an append", n)
	}
	ready.Store(true)
	d.Wake()
	select {
	case <-d.wake:
		st.woken()
	default:
		t.Fatal("Wake did not signal the dispatcher")
	}
	for box.Len() > 0 {
		d.dispatch(ctx, st, results, &wg)
		if len(st.inflight) == 0 {
			t.Fatalf("nothing dispatched after Wake with %d entries left", box.Len())
		}
		for len(st.inflight) > 0 {
			d.finish(ctx, st, <-results)
		}
		if st.atEnd {
			st.atEnd, st.cursor = false, 0
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"v0", "v1", "v2", "v3", "v4", "v5"}, handled, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("handled (-want +got):\n%s", diff)
	}
}

// TestWakeEndsRetryBackoff: entries that failed wait for their backoff,
// and Wake (the consumer's dependency is back) has them tried at once.
func TestWakeEndsRetryBackoff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := newBox(t)
	appendEvents(t, box, 3)
	var up atomic.Bool
	var calls atomic.Int32
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d, err := NewDispatcher(box, func(context.Context, Entry) error {
		calls.Add(1)
		if !up.Load() {
			return errors.New("remote down")
		}
		return nil
	}, DispatcherOptions{Concurrency: 3, MinBackoff: time.Hour, MaxBackoff: time.Hour,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	st := newRunState()
	results := make(chan result, 3)
	var wg sync.WaitGroup
	step := func() {
		d.dispatch(ctx, st, results, &wg)
		for len(st.inflight) > 0 {
			d.finish(ctx, st, <-results)
		}
		if st.atEnd {
			st.atEnd, st.cursor = false, 0
		}
	}
	step()
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
	now = now.Add(time.Minute)
	step()
	if n := calls.Load(); n != 3 {
		t.Errorf("%d calls within the backoff, want 3", n)
	}
	up.Store(true)
	d.Wake()
	<-d.wake
	st.woken()
	step()
	wg.Wait()
	if n := calls.Load(); n != 6 {
		t.Errorf("%d calls after Wake, want 6: every entry tried again at once", n)
	}
	if box.Len() != 0 {
		t.Errorf("Len %d after Wake, want 0", box.Len())
	}
}

func TestShutdownKeepsUnfinished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	box, err := New(db, "scan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := box.Append(ctx, event(0)); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	d, err := NewDispatcher(box, func(ctx context.Context, _ Entry) error {
		close(started)
		<-ctx.Done() // a long scan, cut by the shutdown
		return ctx.Err()
	}, DispatcherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stop := runDispatcher(t, d)
	<-started
	stop()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	box, err = New(openDB(t, path), "scan")
	if err != nil {
		t.Fatal(err)
	}
	if box.Len() != 1 {
		t.Fatalf("Len %d after a shutdown mid-work, want 1", box.Len())
	}
	done := make(chan string, 1)
	d, err = NewDispatcher(box, func(_ context.Context, e Entry) error {
		done <- e.Event.Tag
		return nil
	}, DispatcherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	if tag := <-done; tag != "v0" {
		t.Errorf("handled %s after restart", tag)
	}
	waitFor(t, "the deletion", func() bool { return box.Len() == 0 })
}

// appendEvents appends event(0) to event(n-1).
func appendEvents(t *testing.T, box *Outbox, n int) {
	t.Helper()
	for i := range n {
		if _, err := box.Append(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPass: an entry passed on twice (its first outbox kept it after a
// crash) is stored once, under its own sequence number.
func TestPass(t *testing.T) {
	t.Parallel()
	first, err := New(openDB(t, filepath.Join(t.TempDir(), "meta.db")), "first")
	if err != nil {
		t.Fatal(err)
	}
	box, err := New(first.db, "second")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for i := range 3 {
		if _, err := first.Append(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	entries := readAll(t, first)
	for _, e := range append(entries, entries[1]) {
		if err := box.Pass(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, box)
	if diff := cmp.Diff(entries, got); diff != "" || box.Len() != 3 {
		t.Errorf("passed entries (-want +got):\n%s\nLen %d, want 3", diff, box.Len())
	}
	if err := box.Pass(ctx, Entry{Event: event(9)}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Pass without a sequence number: %v, want ErrInvalidEvent", err)
	}
}
