package gc

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// startReplica runs a serving replica's markers over the store until the
// test ends.
func startReplica(t *testing.T, s *store, off bool) *Marks {
	t.Helper()
	return startReplicaWith(t, s, MarksOptions{Off: off})
}

func startReplicaWith(t *testing.T, s *store, o MarksOptions) *Marks {
	t.Helper()
	m, err := NewMarks(s.d, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	m.Start(ctx)
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// TestVouchedDuringTheRunIsSpared plays the race: between marking and
// sweeping, a client is told an unreferenced blob exists (HEAD) and a
// manifest it is about to refer to exists; the sweep must spare both.
// With markers off, the same sequence loses them: the test shows what the
// markers prevent.
func TestVouchedDuringTheRunIsSpared(t *testing.T) {
	for _, off := range []bool{false, true} {
		s := newStore(t)
		replica := startReplica(t, s, off)
		layer := s.blob("app", "layer the client will not upload again")
		child := s.image("app", "child the client will refer to", s.blob("app", "child layer"))
		c := s.collector(Options{DeleteUntagged: true, Now: time.Now})
		c.afterPlan = func(ctx context.Context) {
			if !replica.Active() && !off {
				t.Error("the replica does not know a collection is running once the sweep may start")
			}
			done := replica.Begin()
			defer done()
			if err := replica.Vouch(ctx, Vouch{Repository: "app", Blobs: []digest.Digest{layer}, Manifests: []digest.Digest{child}}); err != nil {
				t.Errorf("vouch: %v", err)
			}
		}
		rep := s.collect(c, false)
		kept := s.hasBlob(layer) && s.hasManifest("app", child) && s.hasBlob(child)
		if !off && (!kept || rep.Blobs.Spared == 0 || rep.Manifests.Spared != 1) {
			t.Errorf("markers on: what a replica vouched for was deleted (kept %v, spared blobs %d, manifests %d)", kept, rep.Blobs.Spared, rep.Manifests.Spared)
		}
		if !off && !s.hasBlob(s.blobDigest("child layer")) {
			t.Error("a spared manifest's layer was deleted")
		}
		if off && kept {
			t.Error("markers off: the vouched content survived, so this test cannot tell markers matter")
		}
	}
}

func (s *store) blobDigest(content string) digest.Digest { return digest.FromString(content) }

// TestVouchWaitsForTheTombstone: a request vouching for content being
// deleted writes its marker, then waits until the sweeper has decided
// (deleted or spared), so that it answers with what is there.
func TestVouchWaitsForTheTombstone(t *testing.T) {
	s := newStore(t)
	replica := startReplica(t, s, false)
	d := s.blob("app", "being deleted")
	// A run in progress, as the collector announces it.
	s.put(runPath, []byte(`{"id":"r1","holder":"test","phase":"sweep"}`))
	deadline := time.Now().Add(5 * time.Second)
	for !replica.Active() {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not learn of the run")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.put(blobTombstone(d), []byte("test"))
	var wg sync.WaitGroup
	wg.Add(1)
	var waited error
	returned := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(returned)
		waited = replica.Vouch(context.Background(), Vouch{Repository: "app", Blobs: []digest.Digest{d}})
	}()
	select {
	case <-returned:
		t.Fatal("a vouch for tombstoned content did not wait")
	case <-time.After(500 * time.Millisecond):
	}
	if !s.exists(markPath(d)) {
		t.Error("no marker written before the tombstone was read")
	}
	if err := s.d.Delete(context.Background(), blobTombstone(d)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if waited != nil {
		t.Errorf("vouch once the tombstone went: %v", waited)
	}
}

// TestRecentVouchesAreMarkedWhenARunBegins: what a replica told clients
// exists shortly before a collection began is marked for it, before the
// replica acknowledges the run.
func TestRecentVouchesAreMarkedWhenARunBegins(t *testing.T) {
	s := newStore(t)
	m := startReplicaWith(t, s, MarksOptions{Window: time.Minute})
	d := s.blob("app", "checked just before the run")
	settled := s.blob("app", "checked, then referred to by a stored manifest")
	m.Remember(Vouch{Repository: "app", Blobs: []digest.Digest{d, settled}})
	m.Settle(Vouch{Repository: "app", Blobs: []digest.Digest{settled}})
	s.put(runPath, []byte(`{"id":"r3","holder":"test"}`))
	ack := acksRoot + "/r3/mark/" + m.ID()
	deadline := time.Now().Add(5 * time.Second)
	for !s.exists(ack) {
		if time.Now().After(deadline) {
			t.Fatal("no acknowledgement")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !s.exists(markPath(d)) {
		t.Error("a blob vouched for just before the run was not marked before the acknowledgement")
	}
	if s.exists(markPath(settled)) {
		t.Error("a blob a stored manifest referred to since was marked: its push was done")
	}
}

func TestOneCollectorAtATime(t *testing.T) {
	s := newStore(t)
	c := s.collector(Options{Now: time.Now})
	s.put(leasePath, []byte(`{"holder":"other","run":"x","until":"`+time.Now().Add(time.Minute).UTC().Format(time.RFC3339)+`"}`))
	_, err := c.Collect(context.Background(), false)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Holder != "other" {
		t.Fatalf("collect with the lease held: %v, want a BusyError naming the holder", err)
	}
	// A lease its holder stopped renewing (it died) is taken over.
	s.put(leasePath, []byte(`{"holder":"dead","run":"x","until":"`+time.Now().Add(-time.Second).UTC().Format(time.RFC3339)+`"}`))
	if _, err := c.Collect(context.Background(), false); err != nil {
		t.Fatalf("collect after the lease expired: %v", err)
	}
	if s.exists(leasePath) || s.exists(runPath) {
		t.Error("a finished collection left its lease or run object")
	}
	runs, err := c.Runs(context.Background())
	if err != nil || len(runs) != 1 || runs[0].Error != "" {
		t.Errorf("runs: %v %+v", err, runs)
	}
}

// TestAcknowledgeAfterEarlierRequests: a replica acknowledges a run only
// once the requests it began before knowing of the run (which wrote no
// markers) have finished.
func TestAcknowledgeAfterEarlierRequests(t *testing.T) {
	s := newStore(t)
	replica := startReplica(t, s, false) // has read the run state: none
	done := replica.Begin()
	s.put(runPath, []byte(`{"id":"r2","holder":"test"}`))
	ack := acksRoot + "/r2/mark/" + replica.ID()
	time.Sleep(3 * pollEvery)
	if s.exists(ack) {
		t.Fatal("the replica acknowledged the run while a request begun before it was still running")
	}
	done()
	deadline := time.Now().Add(5 * time.Second)
	for !s.exists(ack) {
		if time.Now().After(deadline) {
			t.Fatal("no acknowledgement after the earlier request finished")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTombstonesReadOnlyWhileSweeping: while the collector marks, requests
// write markers but read no tombstone (there is none yet); once every
// replica acknowledged the sweep, they do.
func TestTombstonesReadOnlyWhileSweeping(t *testing.T) {
	s := newStore(t)
	replica := startReplica(t, s, false)
	d := s.blob("app", "candidate")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	s.put(runPath, []byte(`{"id":"r4","holder":"test"}`))
	waitFor("the marking acknowledgement", func() bool { return s.exists(acksRoot + "/r4/mark/" + replica.ID()) })
	s.put(blobTombstone(d), []byte("test")) // as a misbehaving collector would
	start := time.Now()
	if err := replica.Vouch(context.Background(), Vouch{Repository: "app", Blobs: []digest.Digest{d}}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > time.Second {
		t.Error("a vouch while the collector marks waited on a tombstone")
	}
	if !s.exists(markPath(d)) {
		t.Error("no marker while the collector marks")
	}
	s.put(runPath, []byte(`{"id":"r4","holder":"test","phase":"sweep"}`))
	waitFor("the sweep acknowledgement", func() bool { return s.exists(acksRoot + "/r4/sweep/" + replica.ID()) })
	returned := make(chan error, 1)
	go func() {
		returned <- replica.Vouch(context.Background(), Vouch{Repository: "app", Blobs: []digest.Digest{d}})
	}()
	select {
	case err := <-returned:
		t.Fatalf("a vouch during the sweep did not wait for the tombstone: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := s.d.Delete(context.Background(), blobTombstone(d)); err != nil {
		t.Fatal(err)
	}
	if err := <-returned; err != nil {
		t.Errorf("vouch once the tombstone went: %v", err)
	}
}
