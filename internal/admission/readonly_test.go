package admission

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// TestScanEnforceOnReadOnlyRepositories: a scan policy in enforce mode
// gates the reads of a repository nobody pushes to (a pull-through cache)
// as quarantine does, and leaves the reads of other repositories alone.
func TestScanEnforceOnReadOnlyRepositories(t *testing.T) {
	t.Parallel()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	pushers, err := NewPushers(db)
	if err != nil {
		t.Fatal(err)
	}
	scans := &fakeScans{mode: "enforce", undecided: true}
	g, err := New(Options{Scans: scans, Pushers: pushers, Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry(),
		ReadOnly: func(repo string) bool { return strings.HasPrefix(repo, "hub/") }})
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("image")
	err = g.AllowPull(context.Background(), Pull{Repository: "hub/library/app", Digest: d, Tag: "v1"})
	if err == nil || !strings.Contains(err.Error(), "awaiting its vulnerability scan") {
		t.Errorf("read of an unscanned image in a read-only repository: %v, want withheld awaiting its scan", err)
	}
	if err := g.AllowPull(context.Background(), Pull{Repository: "team/app", Digest: d, Tag: "v1"}); err != nil {
		t.Errorf("read of an image in a pushed repository under scan enforce: %v, want allowed (enforce gates the push)", err)
	}
	scans.undecided = false
	if err := g.AllowPull(context.Background(), Pull{Repository: "hub/library/app", Digest: d, Tag: "v1"}); err != nil {
		t.Errorf("read of a scanned, passing image in a read-only repository: %v, want allowed", err)
	}
}
