package scanner

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
	"github.com/portcullis/portcullis/scan/inventory"
)

// onLayers makes reads of img's layer blobs call f (which may fail, block
// or panic) until cleared with a nil f.
func (h *harness) onLayers(img v1.Image, f func(ctx context.Context) error) {
	h.t.Helper()
	if f == nil {
		h.driver.onStream.Store(nil)
		return
	}
	layers, err := img.Layers()
	if err != nil {
		h.t.Fatal(err)
	}
	var hexes []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			h.t.Fatal(err)
		}
		hexes = append(hexes, "/"+d.Hex+"/")
	}
	hook := func(ctx context.Context, path string) error {
		for _, hex := range hexes {
			if strings.Contains(path, hex) {
				return f(ctx)
			}
		}
		return nil
	}
	h.driver.onStream.Store(&hook)
}

// TestScanPanicRecordedOnce: a scan that panics gets the verdict "scan
// failed" once, with a reason that names no internals, and is not retried.
func TestScanPanicRecordedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB()
	img := testImage(t, map[string]string{"a.txt": "a"})
	var calls atomic.Int32
	h.onLayers(img, func(context.Context) error {
		calls.Add(1)
		panic("a parser bug")
	})
	d := h.pushImage("team/panic", "v1", img)
	h.appendEvent(outbox.KindTag, "team/panic", d, "v1")
	h.waitFor("the verdict", func() bool { return h.svc.store.failure("team/panic", d) != "" && h.box.Len() == 0 })
	if got, want := h.svc.store.failure("team/panic", d), "scan failed: internal error while reading the image"; got != want {
		t.Errorf("recorded %q, want %q", got, want)
	}
	if n := testutil.ToFloat64(h.svc.retries); n != 0 {
		t.Errorf("%v retries of a scan that panicked", n)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the image was read %d times, want 1", n)
	}
}

// TestScanTimeLimit: a scan from the outbox that runs over its scan
// policy's time limit gets the verdict "scan failed" and is not retried.
func TestScanTimeLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if got := h.svc.scanTimeout("other/repo"); got != defaultScanTimeout {
		t.Errorf("time limit without a policy: %v, want %v", got, defaultScanTimeout)
	}
	h.svc.minScanTimeout = 0 // the policy's limit, however short
	h.withPolicy(scan.RepoGate{Name: "slow", Mode: "audit", Timeout: 200 * time.Millisecond})
	h.importDB()
	img := testImage(t, map[string]string{"a.txt": "a"})
	h.onLayers(img, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	d := h.pushImage("team/slow", "v1", img)
	h.appendEvent(outbox.KindTag, "team/slow", d, "v1")
	h.waitFor("the verdict", func() bool { return h.svc.store.failure("team/slow", d) != "" && h.box.Len() == 0 })
	if got, want := h.svc.store.failure("team/slow", d), "scan failed: took longer than 200ms"; got != want {
		t.Errorf("recorded %q, want %q", got, want)
	}
	if n := testutil.ToFloat64(h.svc.retries); n != 0 {
		t.Errorf("%v retries of a scan over its time", n)
	}
}

// TestFullTempDirRetried: a scan that cannot write its temporary file (a
// full disk; here a missing directory) is retried, not failed, and
// succeeds once the disk is back. Not parallel: it sets TMPDIR.
func TestFullTempDirRetried(t *testing.T) {
	h := newHarness(t, nil)
	h.importDB() // spools its layers; before TMPDIR is broken
	tmp := t.TempDir()
	t.Setenv("TMPDIR", filepath.Join(tmp, "missing"))
	// A Java archive over 16 MiB is spooled to a temporary file.
	big := testImage(t, map[string]string{"app/app.jar": strings.Repeat("\x00", 17<<20)})
	d := h.pushImage("team/bigjar", "v1", big)
	h.appendEvent(outbox.KindTag, "team/bigjar", d, "v1")
	h.waitFor("a retry", func() bool { return testutil.ToFloat64(h.svc.retries) >= 1 })
	if reason := h.svc.store.failure("team/bigjar", d); reason != "" {
		t.Fatalf("a local disk failure recorded as the image's verdict: %s", reason)
	}
	t.Setenv("TMPDIR", tmp)
	h.waitFor("the report", func() bool { return h.reports("team/bigjar", d) == 1 && h.box.Len() == 0 })
}

// TestLayerCacheErrorsTransient: a metadata database that fails under the
// layer cache fails the scan as the node's fault (retried), not the image's.
func TestLayerCacheErrorsTransient(t *testing.T) {
	t.Parallel()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := newLayerCache(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	key := scan.LayerKey{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, DiffID: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}}
	_, _, getErr := c.GetLayer(context.Background(), key)
	putErr := c.PutLayer(context.Background(), key, &inventory.Layer{})
	for name, err := range map[string]error{"get": getErr, "put": putErr} {
		// As the indexer wraps it.
		wrapped := fmt.Errorf("inventory: layer 0: layer cache %s %s: %w", name, key, err)
		if err == nil || !transient(wrapped) {
			t.Errorf("%s on a closed database: %v, transient %v; want a transient error", name, err, transient(wrapped))
		}
	}
}

// TestReconcileSkipsQueued: an image the reconcile pass queued is not
// queued again by the next passes while its entry waits (here, retried
// while storage is down).
func TestReconcileSkipsQueued(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, nil)
	h.importDB()
	h.waitFor("the first reconcile pass", func() bool { return testutil.ToFloat64(h.svc.recon.runs) >= 1 })
	img := testImage(t, map[string]string{"a.txt": "a"})
	h.onLayers(img, func(context.Context) error { return errors.New("storage unavailable") })
	d := h.pushImage("team/backlog", "", img) // no event
	if err := h.svc.recon.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h.waitFor("a retry", func() bool { return testutil.ToFloat64(h.svc.retries) >= 1 })
	for range 3 {
		if err := h.svc.recon.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.box.Len(); n != 1 {
		t.Errorf("%d entries pending after four passes, want 1", n)
	}
	if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 1 {
		t.Errorf("reconcile queued %v times, want 1", n)
	}
	h.onLayers(img, nil)
	h.waitFor("the report", func() bool { return h.reports("team/backlog", d) == 1 && h.box.Len() == 0 })
	if h.svc.recon.isQueued("team/backlog", d) {
		t.Error("the scanned image is still marked as queued")
	}
}

// TestScanPushHidesStorageErrors: a scan at a tag push that cannot read
// storage tells the client (and the webhooks) to try again, without
// storage's own message.
func TestScanPushHidesStorageErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB()
	const detail = "GetObject s3://bucket/docker/registry/v2/blobs/sha256/ab/data: AccessDenied"
	img := testImage(t, map[string]string{"a.txt": "a"})
	d := h.pushImage("team/push", "", img)
	h.onLayers(img, func(context.Context) error { return errors.New(detail) })
	m, mt := h.manifestOf("team/push", d)
	o, err := h.svc.ScanPush(context.Background(), "team/push", d, m, mt)
	if err != nil {
		t.Fatal(err)
	}
	if want := "the registry could not read the image from storage; try again"; o.Status != scan.StatusFailed || o.Reason != want {
		t.Errorf("outcome %s %q, want %s %q", o.Status, o.Reason, scan.StatusFailed, want)
	}
}

// TestRematchRetried: a re-match with a new database that fails (storage
// refuses the new report) is retried at the next poll, not left until a
// restart.
func TestRematchRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB("npm") // nothing about Debian
	const repo = "team/rematch"
	d := h.pushImage(repo, "v1", debianImage(t))
	h.appendEvent(outbox.KindTag, repo, d, "v1")
	h.waitFor("the first report", func() bool { return h.reports(repo, d) == 1 && h.box.Len() == 0 })
	failing := repo
	h.driver.failWritesIn.Store(&failing)
	h.importDB("npm", "Debian")
	_, _, loaded := h.svc.dbw.Current()
	// A poll re-matches with the new database, fails to store the report,
	// and leaves the matched database as it was, for the next poll.
	if err := h.svc.reloadDB(context.Background()); err == nil {
		t.Error("a poll stored nothing and reported no error")
	}
	if n := h.reports(repo, d); n != 1 || h.svc.store.matchedDB() == loaded {
		t.Fatalf("while storage refuses writes: %d reports, matched database %s (loaded %s)", n, h.svc.store.matchedDB(), loaded)
	}
	h.driver.failWritesIn.Store(nil)
	h.waitFor("the re-matched report", func() bool { return h.reports(repo, d) == 2 && h.svc.store.matchedDB() == loaded })
	if h.findings(repo, d) == 0 {
		t.Error("the re-matched report has no findings")
	}
}

// TestFailureDurable: the verdict "scan failed" is kept in storage, next
// to the image's reports: a node whose metadata database is lost (or
// another replica) still knows it, with its reason, without scanning the
// image again; a newer report supersedes it.
func TestFailureDurable(t *testing.T) {
	t.Parallel()
	first := newHarness(t, nil)
	first.importDB()
	const repo = "team/broken"
	img := testImage(t, map[string]string{"a.txt": "a"})
	var calls atomic.Int32
	first.onLayers(img, func(context.Context) error {
		calls.Add(1)
		panic("a parser bug")
	})
	d := first.pushImage(repo, "v1", img)
	first.appendEvent(outbox.KindTag, repo, d, "v1")
	first.waitFor("the verdict", func() bool { return first.svc.store.failure(repo, d) != "" && first.box.Len() == 0 })
	const want = "scan failed: internal error while reading the image"
	if n := first.referrers(repo, d, artifact.ArtifactTypeFailure); n != 1 {
		t.Fatalf("%d failure artifacts in storage, want 1", n)
	}
	first.stop()

	h := newHarness(t, first.driver) // same storage, a new metadata database
	if reason := h.svc.store.failure(repo, d); reason != "" {
		t.Fatalf("a new metadata database knows the failure %q", reason)
	}
	ctx := context.Background()
	manifest, mt := h.manifestOf(repo, d)
	o := h.svc.StoredOutcome(ctx, repo, d, manifest, mt)
	if o.Status != scan.StatusFailed || o.Reason != want {
		t.Errorf("outcome after losing the metadata: %s %q, want %s %q", o.Status, o.Reason, scan.StatusFailed, want)
	}
	if got := h.svc.store.failure(repo, d); got != want {
		t.Errorf("cached failure %q, want %q", got, want)
	}
	h.importDB()
	h.waitFor("a reconcile pass", func() bool { return testutil.ToFloat64(h.svc.recon.runs) >= 1 })
	h.appendEvent(outbox.KindTag, repo, d, "v2")
	h.waitFor("the entry", func() bool { return h.box.Len() == 0 })
	if n := calls.Load(); n != 1 {
		t.Errorf("the image was read %d times, want 1: scanned again", n)
	}
	if n := testutil.ToFloat64(h.svc.scans.WithLabelValues("failed")); n != 0 {
		t.Errorf("%v scans failed on the new node", n)
	}

	// A newer report (a later scan) wins over the failure.
	h.onLayers(img, nil)
	subject := subjectOf(d, mt, manifest)
	a, err := artifact.ReportArtifact(subject, &scan.Report{}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := push(ctx, h.repo(repo), a, ""); err != nil {
		t.Fatal(err)
	}
	fresh := newHarness(t, h.driver)
	if o := fresh.svc.StoredOutcome(ctx, repo, d, manifest, mt); o.Status != scan.StatusScanned {
		t.Errorf("outcome with a newer report: %s %q, want %s", o.Status, o.Reason, scan.StatusScanned)
	}
}
