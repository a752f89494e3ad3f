package scanner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
	"github.com/portcullis/portcullis/scan/inventory"
	pstorage "github.com/portcullis/portcullis/storage"
	"github.com/portcullis/portcullis/storage/miniotest"
)

// TestReconcileWithoutMetadata: with the metadata database lost, the
// reconcile pass scans the tagged images without a report and leaves the
// scanned ones alone.
func TestReconcileWithoutMetadata(t *testing.T) {
	t.Parallel()
	first := newHarness(t, nil)
	first.importDB()
	scanned := first.pushImage("team/rec", "scanned", debianImage(t))
	first.appendEvent(outbox.KindTag, "team/rec", scanned, "scanned")
	first.waitFor("the first report", func() bool { return first.reports("team/rec", scanned) == 1 })
	// Pushed with no event (an append that failed): only reconcile sees it.
	missed := first.pushImage("other/rec", "missed", testImage(t, map[string]string{"a.txt": "a"}))

	h := newHarness(t, first.driver) // same storage, a new metadata database
	h.waitFor("a reconcile pass", func() bool { return testutil.ToFloat64(h.svc.recon.runs) >= 1 })
	h.waitFor("the missed image's report", func() bool { return h.reports("other/rec", missed) == 1 && h.box.Len() == 0 })
	if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 1 {
		t.Errorf("reconcile queued %v images, want 1", n)
	}
	if n := h.reports("team/rec", scanned); n != 1 {
		t.Errorf("the scanned image has %d reports after reconcile, want 1", n)
	}
	// A second pass finds nothing to do.
	if err := h.svc.recon.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 1 {
		t.Errorf("a second pass queued %v more", n-1)
	}
}

// imageBlobs returns the digests of img's config and layers.
func imageBlobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(cfg.String())}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, digest.Digest(ld.String()))
	}
	return out
}

// storedInventory reads the newest inventory referrer of repo@d and
// returns it with the size of its document.
func (h *harness) storedInventory(repo string, d digest.Digest) (*scan.StoredInventory, int64) {
	h.t.Helper()
	ctx := context.Background()
	manifest, ok, err := h.svc.latest(ctx, repo, d, artifact.ArtifactTypeInventory)
	if err != nil || !ok {
		h.t.Fatalf("no inventory of %s@%s: %v", repo, d, err)
	}
	blobs := h.repo(repo).Blobs(ctx)
	inv, m, err := artifact.ReadInventory(ctx, func(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, d)
	}, manifest)
	if err != nil {
		h.t.Fatal(err)
	}
	return inv, m.Layers[0].Size
}

// TestRematchAfterMetadataLoss: with the metadata database lost, an image
// scanned before is re-matched when a new database is imported, from the
// inventory stored next to its report: its report changes, and none of
// its blobs is read again.
func TestRematchAfterMetadataLoss(t *testing.T) {
	t.Parallel()
	first := newHarness(t, nil)
	first.importDB("npm") // nothing about Debian
	img := debianImage(t)
	d := first.pushImage("team/old", "v1", img)
	first.appendEvent(outbox.KindTag, "team/old", d, "v1")
	first.waitFor("the first report", func() bool { return first.reports("team/old", d) == 1 })
	if n := first.findings("team/old", d); n != 0 {
		t.Fatalf("%d findings with a database without Debian records", n)
	}
	inv, size := first.storedInventory("team/old", d)
	if inv.Format != scan.StoredInventoryFormat || inv.InventoryFormat != inventory.FormatVersion || len(inv.Inventory.Packages) == 0 {
		t.Fatalf("stored inventory: format %d/%d, %d packages", inv.Format, inv.InventoryFormat, len(inv.Inventory.Packages))
	}
	t.Logf("stored inventory: %d packages in %d bytes of JSON", len(inv.Inventory.Packages), size)
	if perPackage := size / int64(len(inv.Inventory.Packages)); perPackage > 512 {
		t.Errorf("stored inventory of %d bytes for %d packages", size, len(inv.Inventory.Packages))
	}
	first.stop()
	blobs := imageBlobs(t, img)
	if first.driver.blobReads(blobs...) == 0 {
		t.Fatal("the scan read no blob: the count is broken")
	}

	h := newHarness(t, first.driver) // same storage, a new metadata database
	before := h.driver.blobReads(blobs...)
	h.waitFor("a reconcile pass", func() bool { return testutil.ToFloat64(h.svc.recon.runs) >= 1 })
	if !h.svc.store.remembered("team/old", d) || testutil.ToFloat64(h.svc.restored) != 1 {
		t.Fatalf("the scanned image was not restored from its stored inventory")
	}
	if n := h.reports("team/old", d); n != 1 {
		t.Errorf("%d reports after restoring with the same database, want 1", n)
	}
	h.importDB("npm", "Debian")
	h.waitFor("the re-matched report", func() bool { return h.reports("team/old", d) == 2 })
	if n := h.findings("team/old", d); n == 0 {
		t.Error("the re-matched report has no findings")
	}
	if n := h.driver.blobReads(blobs...) - before; n != 0 {
		t.Errorf("the image's config and layer were read %d times", n)
	}
	if n := testutil.ToFloat64(h.svc.scans.WithLabelValues("ok")); n != 0 {
		t.Errorf("%v scans", n)
	}
}

// TestRematchScannedElsewhere: an image another replica scanned (and this
// node does not remember) is re-matched when a new database arrives.
func TestRematchScannedElsewhere(t *testing.T) {
	t.Parallel()
	other := newHarness(t, nil)
	other.importDB("npm")
	h := newHarness(t, other.driver)
	h.waitFor("a reconcile pass", func() bool { return testutil.ToFloat64(h.svc.recon.runs) >= 1 })
	img := debianImage(t)
	d := other.pushImage("team/elsewhere", "v1", img)
	other.appendEvent(outbox.KindTag, "team/elsewhere", d, "v1")
	other.waitFor("the first report", func() bool { return other.reports("team/elsewhere", d) == 1 })
	other.stop()

	before := h.driver.blobReads(imageBlobs(t, img)...)
	h.importDB("npm", "Debian")
	h.waitFor("the re-matched report", func() bool { return h.reports("team/elsewhere", d) == 2 })
	if n := h.findings("team/elsewhere", d); n == 0 {
		t.Error("the re-matched report has no findings")
	}
	if n := h.driver.blobReads(imageBlobs(t, img)...) - before; n != 0 {
		t.Errorf("the image's blobs were read %d times", n)
	}
}

// TestReportWithoutInventoryRescanned: an image scanned before inventories
// were stored (a report, no inventory) is scanned once more by the
// reconcile pass, and then has an inventory.
func TestReportWithoutInventoryRescanned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	img := debianImage(t)
	d := h.pushImage("team/legacy", "v1", img)
	raw, _ := img.RawManifest()
	a, err := artifact.ReportArtifact(ocispec.Descriptor{MediaType: string(types.OCIManifestSchema1), Digest: d, Size: int64(len(raw))},
		&scan.Report{Findings: []scan.Finding{}}, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := push(context.Background(), h.repo("team/legacy"), a, ""); err != nil {
		t.Fatal(err)
	}
	h.importDB()
	h.waitFor("the new report", func() bool {
		return h.reports("team/legacy", d) == 2 && h.referrers("team/legacy", d, artifact.ArtifactTypeInventory) == 1 && h.box.Len() == 0
	})
	if h.findings("team/legacy", d) == 0 {
		t.Error("the new report has no findings")
	}
	if err := h.svc.recon.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 1 {
		t.Errorf("reconcile queued %v images, want 1", n)
	}
}

// TestReconcileUntagged: images pushed by digest with no outbox entry are
// scanned by the reconcile pass, which walks every manifest, on each
// storage driver; the index gets no report and the scanner's referrers are
// not queued.
func TestReconcileUntagged(t *testing.T) {
	t.Parallel()
	drivers := map[string]func(t *testing.T) storagedriver.StorageDriver{
		"inmemory": func(*testing.T) storagedriver.StorageDriver { return inmemory.New() },
		"filesystem": func(t *testing.T) storagedriver.StorageDriver {
			return filesystem.New(filesystem.DriverParameters{RootDirectory: t.TempDir(), MaxThreads: 25})
		},
		"s3": func(t *testing.T) storagedriver.StorageDriver {
			srv := miniotest.Start(t)
			d, err := pstorage.New(context.Background(), pstorage.Options{
				Endpoint: srv.Endpoint, Region: "us-east-1", Bucket: srv.NewBucket(t), AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
			})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	}
	for name, driver := range drivers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, &faultyDriver{StorageDriver: driver(t)})
			deb, clean := debianImage(t), testImage(t, map[string]string{"hello.txt": "no packages"})
			dd := h.pushImage("team/untagged", "", deb)
			dc := h.pushImage("team/untagged", "", clean)
			di := h.pushIndex("team/untagged", clean)
			h.importDB()
			h.waitFor("reports of both images", func() bool {
				return h.reports("team/untagged", dd) == 1 && h.reports("team/untagged", dc) == 1 && h.box.Len() == 0
			})
			if h.findings("team/untagged", dd) == 0 {
				t.Error("the Debian image's report has no findings")
			}
			if n := h.reports("team/untagged", di); n != 0 {
				t.Errorf("the index has %d reports", n)
			}
			if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 2 {
				t.Errorf("reconcile queued %v images, want 2", n)
			}
			// A second pass finds nothing to do, and reads no manifest: the
			// images are remembered, the index and the referrers known as
			// no images.
			before := h.driver.blobReads()
			if err := h.svc.recon.reconcile(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 2 {
				t.Errorf("a second pass queued %v more", n-2)
			}
			if n := h.driver.blobReads() - before; n != 0 {
				t.Errorf("a second pass read %d blobs", n)
			}
		})
	}
}

// TestStaleInventoryRescanned: after an upgrade whose extractors changed
// (inventory.FormatVersion), an image remembered with an inventory of the
// old format, and stored with one, is indexed again by the reconcile pass:
// it is not re-matched from the old inventory forever.
func TestStaleInventoryRescanned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.importDB("npm", "Debian")
	img := debianImage(t)
	d := h.pushImage("team/stale", "v1", img)
	h.appendEvent(outbox.KindTag, "team/stale", d, "v1")
	h.waitFor("the first report", func() bool {
		return h.reports("team/stale", d) == 1 && h.box.Len() == 0 && h.svc.store.remembered("team/stale", d)
	})
	if err := h.svc.recon.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(h.svc.recon.enqueued); n != 0 {
		t.Fatalf("reconcile queued %v images with a current inventory, want 0", n)
	}

	// What an older release left: the remembered entry and the newest stored
	// inventory both of the previous format (dated after the current one so
	// that it is the newest, as an older release's is until the rescan).
	inv, _ := h.storedInventory("team/stale", d)
	inv.InventoryFormat = inventory.FormatVersion - 1
	raw, _ := img.RawManifest()
	subject := ocispec.Descriptor{MediaType: string(types.OCIManifestSchema1), Digest: d, Size: int64(len(raw))}
	a, err := artifact.InventoryArtifact(subject, inv, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := push(context.Background(), h.repo("team/stale"), a, ""); err != nil {
		t.Fatal(err)
	}
	err = h.svc.store.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketScanned)
		var e scanned
		if err := json.Unmarshal(b.Get(scannedKey("team/stale", d)), &e); err != nil {
			return err
		}
		e.Inventory.InventoryFormat = inventory.FormatVersion - 1
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(scannedKey("team/stale", d), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.svc.store.remembered("team/stale", d) {
		t.Fatal("an entry with an old inventory format counts as remembered")
	}
	if err := h.svc.recon.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the image indexed again", func() bool {
		return testutil.ToFloat64(h.svc.scans.WithLabelValues("ok")) == 2 && h.box.Len() == 0 && h.svc.store.remembered("team/stale", d)
	})
}

// TestCurrentInventory: the format check reads the entry's inventory
// formats, whatever comes before them, and fails closed on anything else.
func TestCurrentInventory(t *testing.T) {
	t.Parallel()
	cur := fmt.Sprintf(`{"format":%d,"inventoryFormat":%d`, scan.StoredInventoryFormat, inventory.FormatVersion)
	for _, tt := range []struct {
		entry string
		want  bool
	}{
		{`{"subject":{"mediaType":"x","digest":"sha256:00","size":1},"inventory":` + cur + `,"image":{},"inventory":{"packages":[]}},"report":null}`, true},
		{`{"inventory":` + cur + `}}`, true},
		// Only the leading fields are read: what follows them is not.
		{`{"inventory":` + cur + `,"inventory":{"packages":[1,2,` + strings.Repeat("[", 1<<16), true},
		{fmt.Sprintf(`{"inventory":{"format":%d,"inventoryFormat":%d}}`, scan.StoredInventoryFormat, inventory.FormatVersion-1), false},
		{fmt.Sprintf(`{"inventory":{"format":%d,"inventoryFormat":%d}}`, scan.StoredInventoryFormat+1, inventory.FormatVersion), false},
		{`{"inventory":null}`, false},
		{`{"subject":{}}`, false},
		{`not json`, false},
		{``, false},
	} {
		if got := currentInventory([]byte(tt.entry)); got != tt.want {
			t.Errorf("currentInventory(%.80q) = %v, want %v", tt.entry, got, tt.want)
		}
	}
}
