package outbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// TestRecorder: events appended by several goroutines at once all reach
// every outbox once, each goroutine's in its order, under the same
// sequence numbers in each outbox, in fewer transactions than events; Close
// commits what is queued; an incomplete event is refused at once; Append
// after Close fails.
func TestRecorder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "meta.db"))
	scan, err := New(db, "scan")
	if err != nil {
		t.Fatal(err)
	}
	repl, err := New(db, "replication")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRecorder(nil, scan, newBox(t)); err == nil {
		t.Error("a recorder over two databases was made")
	}
	r, err := NewRecorder(nil, scan, repl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Append(ctx, Event{Kind: KindPush, Repository: "team/app"}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Append of an event without digest or tag: %v, want ErrInvalidEvent", err)
	}
	writes := func() int64 { s := db.Stats(); return s.TxStats.GetWrite() }
	writesBefore := writes()
	const producers, each = 8, 200
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				e := event(i)
				e.Repository = fmt.Sprintf("team/p%d", p)
				if _, err := r.Append(ctx, e); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Append(ctx, event(0)); !errors.Is(err, ErrRecorderClosed) {
		t.Errorf("Append after Close: %v, want ErrRecorderClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	got := [2][]Entry{readAll(t, scan), readAll(t, repl)}
	for b, entries := range got {
		if len(entries) != producers*each {
			t.Fatalf("outbox %d holds %d entries, want %d", b, len(entries), producers*each)
		}
		if n := []*Outbox{scan, repl}[b].Len(); n != producers*each {
			t.Errorf("outbox %d counts %d pending, want %d", b, n, producers*each)
		}
		next := map[string]int{}
		for _, e := range entries {
			want := event(next[e.Event.Repository]).Tag
			if e.Event.Tag != want {
				t.Fatalf("outbox %d: %s's entry %s is %s, want %s", b, e.Event.Repository, e.Event.Tag, e.Event.Tag, want)
			}
			next[e.Event.Repository]++
		}
	}
	for i := range got[0] {
		if got[0][i].Seq != got[1][i].Seq || got[0][i].Event.Repository != got[1][i].Event.Repository || got[0][i].Event.Tag != got[1][i].Event.Tag {
			t.Fatalf("entry %d differs between the outboxes: %+v, %+v", i, got[0][i], got[1][i])
		}
	}
	// Write statistics count bolt's page writes, not transactions: the
	// check is that batching kept them well under one commit per event.
	if n := writes() - writesBefore; n >= producers*each {
		t.Errorf("%d page writes for %d events: not batched", n, producers*each)
	}
}
