package scanner

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/scan/artifact"
)

// testRepos opens repositories as the registry does (sha512 aliases, the
// referrers index) and lists them.
type testRepos struct {
	ns    distribution.Namespace
	idx   *referrers.Index
	links *digests.Links
}

func (r testRepos) Repository(ctx context.Context, name reference.Named) (distribution.Repository, error) {
	repo, err := r.ns.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	return referrers.Wrap(digests.Wrap(repo, r.links), r.idx), nil
}

func (r testRepos) Enumerate(ctx context.Context, ingester func(string) error) error {
	err := r.ns.(distribution.RepositoryEnumerator).Enumerate(ctx, ingester)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

// faultyDriver fails reading blob content while fail is set, like a
// storage backend that is down, and counts the reads of each blob.
type faultyDriver struct {
	storagedriver.StorageDriver
	fail atomic.Bool
	// onStream, when set, is called before each streamed read of a blob
	// (layers, database layers, documents; not manifests or configs, which
	// are read whole): it may fail, block or panic.
	onStream atomic.Pointer[func(ctx context.Context, path string) error]
	// failWritesIn, when set, is a repository whose writes fail.
	failWritesIn atomic.Pointer[string]

	mu    sync.Mutex
	reads map[string]int // by blob digest
}

// readBlob counts a read of p when it is a blob's data, and fails it while
// fail is set.
func (d *faultyDriver) readBlob(p string) error {
	if !strings.Contains(p, "/blobs/") {
		return nil
	}
	if d.fail.Load() {
		return errors.New("storage unavailable")
	}
	// .../blobs/<algorithm>/<first two hex>/<hex>/data
	hex := path.Base(path.Dir(p))
	alg := path.Base(path.Dir(path.Dir(path.Dir(p))))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reads == nil {
		d.reads = map[string]int{}
	}
	d.reads[alg+":"+hex]++
	return nil
}

func (d *faultyDriver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	if err := d.readBlob(path); err != nil {
		return nil, err
	}
	if f := d.onStream.Load(); f != nil && strings.Contains(path, "/blobs/") {
		if err := (*f)(ctx, path); err != nil {
			return nil, err
		}
	}
	return d.StorageDriver.Reader(ctx, path, offset)
}

// write fails a write to p while p is in the repository failWritesIn.
func (d *faultyDriver) write(p string) error {
	if repo := d.failWritesIn.Load(); repo != nil && strings.Contains(p, "/repositories/"+*repo+"/") {
		return errors.New("storage unavailable for writes")
	}
	return nil
}

func (d *faultyDriver) PutContent(ctx context.Context, path string, content []byte) error {
	if err := d.write(path); err != nil {
		return err
	}
	return d.StorageDriver.PutContent(ctx, path, content)
}

func (d *faultyDriver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	if err := d.write(path); err != nil {
		return nil, err
	}
	return d.StorageDriver.Writer(ctx, path, append)
}

func (d *faultyDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	if err := d.readBlob(path); err != nil {
		return nil, err
	}
	return d.StorageDriver.GetContent(ctx, path)
}

// blobReads returns how many times the blobs ds (all blobs when none is
// given: layers, configs, manifests) were read.
func (d *faultyDriver) blobReads(ds ...digest.Digest) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	if len(ds) == 0 {
		for _, c := range d.reads {
			n += c
		}
	}
	for _, dg := range ds {
		n += d.reads[dg.String()]
	}
	return n
}

// harness is a scanner over in-memory storage, as the registry runs it.
type harness struct {
	t       testing.TB
	driver  *faultyDriver
	repos   testRepos
	svc     *Service
	box     *outbox.Outbox
	metrics *prometheus.Registry
	// stop stops the scanner and closes its metadata database; it may be
	// called more than once.
	stop func()
}

// newHarness starts a scanner on driver (a new in-memory one when nil)
// with a fresh metadata database, as after the database file was deleted.
func newHarness(t testing.TB, driver *faultyDriver) *harness {
	t.Helper()
	ctx := context.Background()
	if driver == nil {
		driver = &faultyDriver{StorageDriver: inmemory.New()}
	}
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := referrers.NewIndex(driver)
	if err != nil {
		t.Fatal(err)
	}
	links, err := digests.NewLinks(driver)
	if err != nil {
		t.Fatal(err)
	}
	repos := testRepos{ns: ns, idx: idx, links: links}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	refs, err := referrers.NewHandler(idx, ns, log)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	box, err := outbox.New(meta, "scan")
	if err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	svc, err := New(Options{Repos: repos, Refs: refs, Catalog: repos, Outbox: box, Metadata: meta, Log: log, Metrics: metrics,
		PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := meta.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(stop)
	return &harness{t: t, driver: driver, repos: repos, svc: svc, box: box, metrics: metrics, stop: stop}
}

func (h *harness) repo(name string) distribution.Repository {
	h.t.Helper()
	named, err := reference.WithName(name)
	if err != nil {
		h.t.Fatal(err)
	}
	r, err := h.repos.Repository(context.Background(), named)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// importDB imports the records of the shared OSV bundle for ecosystems
// (Debian when none is given).
func (h *harness) importDB(ecosystems ...string) {
	h.t.Helper()
	if len(ecosystems) == 0 {
		ecosystems = []string{"Debian"}
	}
	dir := h.t.TempDir()
	for _, eco := range ecosystems {
		zip, err := os.ReadFile(filepath.Join("../../../shared/vulndb/osv", eco, "all.zip"))
		if err != nil {
			h.t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "osv", eco), 0o755); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "osv", eco, "all.zip"), zip, 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
	d, _, err := ImportDB(context.Background(), h.repos, dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.waitFor("the database to load", func() bool {
		_, _, loaded := h.svc.dbw.Current()
		return loaded == d
	})
}

// pushImage stores img in repo (tagged when tag is set) without an event,
// and returns its digest.
func (h *harness) pushImage(repo, tag string, img v1.Image) digest.Digest {
	h.t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		h.t.Fatal(err)
	}
	mt, _ := img.MediaType()
	d, _ := img.Digest()
	a := &artifact.Artifact{Manifest: raw, Descriptor: ocispec.Descriptor{MediaType: string(mt), Digest: digest.Digest(d.String()), Size: int64(len(raw))}}
	cfgName, _ := img.ConfigName()
	cfg, _ := img.RawConfigFile()
	a.Blobs = append(a.Blobs, artifact.Blob{
		Descriptor: ocispec.Descriptor{MediaType: string(types.OCIConfigJSON), Digest: digest.Digest(cfgName.String()), Size: int64(len(cfg))},
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cfg)), nil },
	})
	layers, _ := img.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		size, _ := l.Size()
		a.Blobs = append(a.Blobs, artifact.Blob{
			Descriptor: ocispec.Descriptor{MediaType: string(types.OCILayer), Digest: digest.Digest(ld.String()), Size: size},
			Open:       l.Compressed,
		})
	}
	if err := push(context.Background(), h.repo(repo), a, tag); err != nil {
		h.t.Fatal(err)
	}
	return a.Descriptor.Digest
}

// pushIndex stores an index of imgs (already pushed) in repo, by digest.
func (h *harness) pushIndex(repo string, imgs ...v1.Image) digest.Digest {
	h.t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, img := range imgs {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: []string{"amd64", "arm64"}[i%2]},
		}})
	}
	raw, err := idx.RawManifest()
	if err != nil {
		h.t.Fatal(err)
	}
	d := digest.FromBytes(raw)
	a := &artifact.Artifact{Manifest: raw, Descriptor: ocispec.Descriptor{MediaType: string(types.OCIImageIndex), Digest: d, Size: int64(len(raw))}}
	if err := push(context.Background(), h.repo(repo), a, ""); err != nil {
		h.t.Fatal(err)
	}
	return d
}

// appendEvent records a push as the front handler does.
func (h *harness) appendEvent(kind outbox.Kind, repo string, d digest.Digest, tag string) {
	h.t.Helper()
	if _, err := h.box.Append(context.Background(), outbox.Event{Kind: kind, Repository: repo, Digest: d, Tag: tag}); err != nil {
		h.t.Fatal(err)
	}
}

// reports returns how many scan reports repo@d has.
func (h *harness) reports(repo string, d digest.Digest) int {
	h.t.Helper()
	return h.referrers(repo, d, artifact.ArtifactTypeReport)
}

// referrers returns how many referrers of artifactType repo@d has.
func (h *harness) referrers(repo string, d digest.Digest, artifactType string) int {
	h.t.Helper()
	descs, err := h.svc.refs.List(context.Background(), repo, d)
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, desc := range descs {
		if desc.ArtifactType == artifactType {
			n++
		}
	}
	return n
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reportOf reads the newest report of repo@d.
func (h *harness) findings(repo string, d digest.Digest) int {
	h.t.Helper()
	ctx := context.Background()
	manifest, ok, err := h.svc.latest(ctx, repo, d, artifact.ArtifactTypeReport)
	if err != nil || !ok {
		h.t.Fatalf("no report of %s@%s: %v", repo, d, err)
	}
	blobs := h.repo(repo).Blobs(ctx)
	r, _, err := artifact.ReadReport(ctx, func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, d)
	}, manifest)
	if err != nil {
		h.t.Fatal(err)
	}
	return len(r.Findings)
}

func testImage(t testing.TB, files map[string]string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func debianImage(t testing.TB) v1.Image {
	t.Helper()
	status, err := os.ReadFile("../../scan/testdata/images/debian-status")
	if err != nil {
		t.Fatal(err)
	}
	return testImage(t, map[string]string{"var/lib/dpkg/status": string(status), "etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n"})
}

// TestPushBeforeDatabase: a push made while no database is loaded stays in
// the outbox, and is scanned once a database is imported.
func TestPushBeforeDatabase(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d := h.pushImage("team/deb", "v1", debianImage(t))
	h.appendEvent(outbox.KindTag, "team/deb", d, "v1")
	// A poll finds no database, and the consumer is not ready: the
	// dispatcher keeps the entry and pauses until a database is loaded.
	ctx := context.Background()
	if err := h.svc.reloadDB(ctx); err != nil {
		t.Fatal(err)
	}
	entries, err := h.box.Read(ctx, 0, 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("outbox: %d entries, %v", len(entries), err)
	}
	if err := h.svc.handle(ctx, entries[0]); !errors.Is(err, outbox.ErrNotReady) {
		t.Fatalf("handle before a database: %v, want ErrNotReady", err)
	}
	if n := h.reports("team/deb", d); n != 0 || h.box.Len() != 1 {
		t.Fatalf("before a database: %d reports, %d entries pending; want 0 and 1", n, h.box.Len())
	}
	h.importDB()
	h.waitFor("the report", func() bool { return h.reports("team/deb", d) == 1 && h.box.Len() == 0 })
	if h.findings("team/deb", d) == 0 {
		t.Error("the report has no findings")
	}
}

// TestDuplicateEventsScanOnce: the same image pushed under several tags is
// scanned once; a delete forgets it.
func TestDuplicateEventsScanOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB()
	img := debianImage(t)
	d := h.pushImage("team/dup", "v1", img)
	for _, tag := range []string{"v1", "v2", "v3", "v4"} {
		h.appendEvent(outbox.KindTag, "team/dup", d, tag)
	}
	h.appendEvent(outbox.KindPush, "team/dup", d, "")
	h.waitFor("the outbox to drain", func() bool { return h.box.Len() == 0 })
	if n := h.reports("team/dup", d); n != 1 {
		t.Errorf("%d reports after five events for one image, want 1", n)
	}
	if !h.svc.store.remembered("team/dup", d) {
		t.Fatal("the scanned image is not remembered")
	}
	h.appendEvent(outbox.KindDelete, "team/dup", d, "")
	h.waitFor("the delete", func() bool { return !h.svc.store.remembered("team/dup", d) })
}

// TestIndexQueuesItsImages: an index pushed by digest gets each of its
// images scanned, the index itself gets no report.
func TestIndexQueuesItsImages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB()
	deb, clean := debianImage(t), testImage(t, map[string]string{"hello.txt": "no packages"})
	dd := h.pushImage("team/multi", "", deb)
	dc := h.pushImage("team/multi", "", clean)
	di := h.pushIndex("team/multi", deb, clean)
	h.appendEvent(outbox.KindPush, "team/multi", di, "")
	h.waitFor("reports of both images", func() bool {
		return h.reports("team/multi", dd) == 1 && h.reports("team/multi", dc) == 1 && h.box.Len() == 0
	})
	if n := h.reports("team/multi", di); n != 0 {
		t.Errorf("the index has %d reports", n)
	}
	if h.findings("team/multi", dd) == 0 {
		t.Error("the Debian image's report has no findings")
	}
}

// TestStorageDownRetries: a scan that cannot read storage is retried, not
// failed, and succeeds once storage is back.
func TestStorageDownRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB()
	d := h.pushImage("team/flaky", "v1", debianImage(t))
	h.driver.fail.Store(true)
	h.appendEvent(outbox.KindTag, "team/flaky", d, "v1")
	h.waitFor("a retry", func() bool { return testutil.ToFloat64(h.svc.retries) >= 1 })
	if reason := h.svc.store.failure("team/flaky", d); reason != "" {
		t.Fatalf("storage down recorded as the image's verdict: %s", reason)
	}
	if h.box.Len() != 1 {
		t.Fatalf("%d entries pending while storage is down, want 1", h.box.Len())
	}
	h.driver.fail.Store(false)
	h.waitFor("the report", func() bool { return h.reports("team/flaky", d) == 1 && h.box.Len() == 0 })
}

// TestImageWithSubjectScanned: an image that carries a subject is an
// image: its push is scanned like any other.
func TestImageWithSubjectScanned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB()
	base := debianImage(t)
	bd, _ := base.Digest()
	withSubject, ok := mutate.Subject(base, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: bd, Size: 1}).(v1.Image)
	if !ok {
		t.Fatal("mutate.Subject did not return an image")
	}
	d := h.pushImage("team/subject", "", withSubject)
	if _, err := h.box.Append(context.Background(), outbox.Event{Kind: outbox.KindPush, Repository: "team/subject", Digest: d, Subject: digest.Digest(bd.String())}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the outbox to drain", func() bool { return h.box.Len() == 0 })
	if n := h.reports("team/subject", d); n != 1 {
		t.Errorf("%d reports for an image with a subject, want 1", n)
	}
}
