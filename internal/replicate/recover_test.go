package replicate_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/replicate"
	"github.com/portcullis/portcullis/replication"
)

// TestRemoteBackEndsBackoff: an event that failed because the remote was
// unavailable is copied as soon as the remote answers again, not after its
// retry backoff. The service's clock stands still, so the backoff never
// ends by itself: only the probe that finds the remote back can send it.
func TestRemoteBackEndsBackoff(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h := newHarness(t, pushRule)
	d := h.pushLocal("prod/app", "v1")

	var down atomic.Bool
	var seen atomic.Int32
	down.Store(true)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.site.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	rem, err := replication.New(replication.Options{Name: "site-b", URL: front.URL})
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Remotes = []config.Remote{{Name: "site-b", URL: front.URL}}
	c.Replication = config.Replication{Rules: []config.ReplicationRule{pushRule}}
	c.Provision()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	frozen := time.Now()
	svc, err := replicate.New(replicate.Options{Config: c.Replication, Remotes: map[string]*replication.Remote{"site-b": rem},
		Local: h.local, Catalog: h.local.Repos.(testRepos), Driver: inmemory.New(), Metadata: db, Now: func() time.Time { return frozen }})
	if err != nil {
		t.Fatal(err)
	}
	box, err := outbox.New(db, replicate.OutboxName)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Follow(box); err != nil {
		t.Fatal(err)
	}
	if _, err := box.Append(ctx, tagEvent("prod/app", "v1", "alice").Event); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("the copy fails while the remote is down", func() bool {
		st := svc.Status(ctx)
		return seen.Load() > 0 && len(st) > 0 && len(st[0].Failures) > 0
	})
	if got := h.remoteDigest("prod/app", "v1"); got != "" {
		t.Fatalf("prod/app:v1 at the site while it was down: %s", got)
	}
	down.Store(false)
	wait("prod/app:v1 at the site once it is back", func() bool { return h.remoteDigest("prod/app", "v1") == d })
	wait("the event done", func() bool { return box.Len() == 0 })
}
