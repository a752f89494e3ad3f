package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// sharedVulnDB is the offline OSV test bundle beside the repository.
const sharedVulnDB = "../../../shared/vulndb"

var (
	dbOnce sync.Once
	dbErr  error
	testDB *vulndb.DB
)

// loadSharedDB loads the shared bundle from its directory once per test binary.
func loadSharedDB(t testing.TB) *vulndb.DB {
	t.Helper()
	dbOnce.Do(func() { testDB, dbErr = vulndb.Load(context.Background(), sharedVulnDB, vulndb.Options{}) })
	if dbErr != nil {
		t.Fatal(dbErr)
	}
	return testDB
}

// store is an in-memory blob store standing in for a repository.
type store struct {
	mu      sync.Mutex
	blobs   map[digest.Digest][]byte
	fetches int
}

func (s *store) push(t testing.TB, a *Artifact) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blobs == nil {
		s.blobs = map[digest.Digest][]byte{}
	}
	for _, b := range a.Blobs {
		rc, err := b.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if digest.FromBytes(data) != b.Digest || int64(len(data)) != b.Size {
			t.Fatalf("blob %s does not match its descriptor", b.Digest)
		}
		s.blobs[b.Digest] = data
	}
}

func (s *store) fetch(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches++
	b, ok := s.blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, os.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestDBRoundTrip(t *testing.T) {
	t.Parallel()
	want := loadSharedDB(t)
	a, cfg, err := PackDB(t.Context(), sharedVulnDB, PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := PackDB(t.Context(), sharedVulnDB, PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Manifest, again.Manifest) {
		t.Error("packing the same bundle twice gives different manifests")
	}
	if cfg.Digest != want.Digest || cfg.Records != want.Records || !cfg.Modified.Equal(want.Modified) {
		t.Errorf("config %+v, want digest %s records %d modified %v", cfg, want.Digest, want.Records, want.Modified)
	}
	var counts []string
	for _, e := range cfg.Ecosystems {
		counts = append(counts, fmt.Sprintf("%s=%d", e.Name, e.Records))
	}
	if diff := cmp.Diff([]string{"Alpine=6703", "Debian=15", "Go=4291", "npm=3"}, counts); diff != "" {
		t.Errorf("ecosystem records (-want +got):\n%s", diff)
	}

	m, err := ParseManifest(a.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != ArtifactTypeVulnDB || m.Config.MediaType != MediaTypeVulnDBConfig || len(m.Layers) != 4 ||
		m.Annotations[AnnotationDBDigest] != want.Digest || m.Annotations[ocispec.AnnotationCreated] != want.Modified.UTC().Format(time.RFC3339) {
		t.Errorf("manifest: %s", a.Manifest)
	}
	for _, l := range m.Layers {
		if l.MediaType != MediaTypeVulnDBLayer || l.Annotations[ocispec.AnnotationTitle] != l.Annotations[AnnotationEcosystem]+"/all.zip" {
			t.Errorf("layer %+v", l)
		}
	}
	if a.Descriptor.Digest != digest.FromBytes(a.Manifest) || a.Descriptor.ArtifactType != ArtifactTypeVulnDB {
		t.Errorf("descriptor %+v", a.Descriptor)
	}

	for _, tt := range []struct {
		name string
		opts LoadOptions
	}{
		{"in memory", LoadOptions{}},
		{"spooled to disk", LoadOptions{InMemoryBytes: 1024, TempDir: t.TempDir()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s store
			s.push(t, a)
			db, err := LoadDB(t.Context(), s.fetch, a.Manifest, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if db.Digest != want.Digest || db.Records != want.Records || !db.Modified.Equal(want.Modified) {
				t.Errorf("loaded db %s %d %v, want %s %d %v", db.Digest, db.Records, db.Modified, want.Digest, want.Records, want.Modified)
			}
			if diff := cmp.Diff(want.Ecosystems, db.Ecosystems); diff != "" {
				t.Errorf("ecosystems (-want +got):\n%s", diff)
			}
			if len(db.Lookup("Debian:12", "perl")) != 13 {
				t.Errorf("perl lookup: %d", len(db.Lookup("Debian:12", "perl")))
			}
			if tt.opts.TempDir != "" {
				if left, _ := os.ReadDir(tt.opts.TempDir); len(left) != 0 {
					t.Errorf("spool files left behind: %v", left)
				}
			}
		})
	}
}

// smallDB packs a one-record bundle.
func smallDB(t testing.TB) (*Artifact, *store) {
	t.Helper()
	dir := t.TempDir()
	writeZip(t, dir+"/npm/all.zip", map[string]string{
		"GHSA-1.json": `{"id":"GHSA-1","modified":"2024-01-02T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"left-pad"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.3.0"}]}]}]}`,
	})
	writeZip(t, dir+"/PyPI/all.zip", map[string]string{
		"PYSEC-1.json": `{"id":"PYSEC-1","modified":"2024-01-03T00:00:00Z"}`,
	})
	a, _, err := PackDB(context.Background(), dir, PackOptions{Created: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	s := &store{}
	s.push(t, a)
	return a, s
}

func writeZip(t testing.TB, p string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(p[:strings.LastIndexByte(p, '/')], 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, zipBytes(t, files), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editManifest decodes a manifest, lets edit change it and encodes it again.
func editManifest(t testing.TB, b []byte, edit func(m *ocispec.Manifest)) []byte {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadDBRejects(t *testing.T) {
	t.Parallel()
	a, s := smallDB(t)
	if _, err := LoadDB(t.Context(), s.fetch, a.Manifest, LoadOptions{}); err != nil {
		t.Fatalf("valid artifact: %v", err)
	}
	// putConfig stores a config blob and points the manifest at it.
	putConfig := func(m *ocispec.Manifest, edit func(c *DBConfig)) {
		var c DBConfig
		json.Unmarshal(s.blobs[m.Config.Digest], &c)
		edit(&c)
		b, _ := json.Marshal(c)
		s.mu.Lock()
		s.blobs[digest.FromBytes(b)] = b
		s.mu.Unlock()
		m.Config.Digest, m.Config.Size = digest.FromBytes(b), int64(len(b))
	}
	tampered := append([]byte(nil), s.blobs[a.Blobs[1].Digest]...)
	tampered[len(tampered)-1] ^= 1
	tamperedStore := &store{blobs: map[digest.Digest][]byte{}}
	for d, b := range s.blobs {
		tamperedStore.blobs[d] = b
	}
	tamperedStore.blobs[a.Blobs[1].Digest] = tampered

	tests := []struct {
		name     string
		manifest func() []byte
		fetch    Fetch
		opts     LoadOptions
		want     error
		wantText string
	}{
		{"not json", func() []byte { return []byte("{") }, nil, LoadOptions{}, ErrInvalidArtifact, "manifest"},
		{"too large", func() []byte { return make([]byte, MaxManifestBytes+1) }, nil, LoadOptions{}, ErrTooLarge, ""},
		{"schema version", func() []byte { return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.SchemaVersion = 1 }) }, nil, LoadOptions{}, ErrInvalidArtifact, "schema version"},
		{"docker media type", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.MediaType = "application/vnd.docker.distribution.manifest.v2+json" })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "media type"},
		{"report, not a database", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.ArtifactType = ArtifactTypeReport })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "artifact type"},
		{"config media type", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Config.MediaType = ocispec.MediaTypeEmptyJSON })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "config media type"},
		{"no layers", func() []byte { return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Layers = nil }) }, nil, LoadOptions{}, ErrInvalidArtifact, "0 layers"},
		{"layer media type", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Layers[0].MediaType = "application/zip" })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "layer 0 media type"},
		{"path in ecosystem", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Layers[0].Annotations[AnnotationEcosystem] = "../etc" })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "ecosystem"},
		{"ecosystem twice", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) {
				m.Layers[1].Annotations[AnnotationEcosystem] = m.Layers[0].Annotations[AnnotationEcosystem]
			})
		}, nil, LoadOptions{}, ErrInvalidArtifact, "two layers"},
		{"bad digest", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Layers[0].Digest = "sha256:zz" })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "digest"},
		{"sha512 digest", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Layers[0].Digest = digest.SHA512.FromString("x") })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "sha256"},
		{"layers over limit", func() []byte { return a.Manifest }, nil, LoadOptions{MaxBytes: 100}, ErrTooLarge, ""},
		{"config names another database", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) {
				putConfig(m, func(c *DBConfig) { c.Digest = digest.FromString("x").String() })
			})
		}, nil, LoadOptions{}, ErrInvalidArtifact, "config names database"},
		{"config format", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { putConfig(m, func(c *DBConfig) { c.Format = 2 }) })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "config format"},
		{"config ecosystems", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { putConfig(m, func(c *DBConfig) { c.Ecosystems = c.Ecosystems[:1] }) })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "ecosystems"},
		{"layer dropped from manifest", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Layers = m.Layers[:1] })
		}, nil, LoadOptions{}, ErrInvalidArtifact, "config names database"},
		{"size lies", func() []byte {
			return editManifest(t, a.Manifest, func(m *ocispec.Manifest) { m.Config.Size-- })
		}, nil, LoadOptions{}, ErrBlobMismatch, ""},
		{"tampered layer in memory", func() []byte { return a.Manifest }, tamperedStore.fetch, LoadOptions{}, ErrBlobMismatch, ""},
		{"tampered layer spooled", func() []byte { return a.Manifest }, tamperedStore.fetch, LoadOptions{InMemoryBytes: 1, TempDir: t.TempDir()}, ErrBlobMismatch, ""},
		{"missing blob", func() []byte { return a.Manifest }, (&store{}).fetch, LoadOptions{}, os.ErrNotExist, "fetch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fetch := tt.fetch
			if fetch == nil {
				fetch = s.fetch
			}
			_, err := LoadDB(t.Context(), fetch, tt.manifest(), tt.opts)
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.wantText) {
				t.Errorf("err = %v, want %v containing %q", err, tt.want, tt.wantText)
			}
		})
	}

	// A layer that is a valid blob but not a valid database fails with vulndb's error.
	bad := t.TempDir()
	writeZip(t, bad+"/npm/all.zip", map[string]string{"X.json": `{"id":"X","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"SEMVER","events":[{"fixed":"1"}]}]}]}`})
	if _, _, err := PackDB(t.Context(), bad, PackOptions{}); !errors.Is(err, osv.ErrInvalidRecord) {
		t.Errorf("PackDB of an invalid bundle: %v", err)
	}
	if _, _, err := PackDB(t.Context(), t.TempDir(), PackOptions{}); !errors.Is(err, vulndb.ErrNoDatabase) {
		t.Errorf("PackDB of an empty directory: %v", err)
	}
}

// debianImage builds a Debian 12 image from the scanner's dpkg status fixture.
func debianImage(t testing.TB) (v1.Image, ocispec.Descriptor) {
	t.Helper()
	status, err := os.ReadFile("../testdata/images/debian-status")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{
		"etc/os-release":                           "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
		"var/lib/dpkg/status":                      string(status),
		"app/node_modules/@scope/pkg/package.json": `{"name":"@scope/pkg","version":"1.0.0+build"}`,
		"usr/lib/python3/site-packages/Foo_Bar-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n",
	} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, "application/vnd.oci.image.manifest.v1+json")
	img = mutate.ConfigMediaType(img, "application/vnd.oci.image.config.v1+json")
	d, _ := img.Digest()
	size, _ := img.Size()
	return img, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(d.String()), Size: size}
}

func scanned(t testing.TB) (*scan.StoredInventory, *scan.Report, ocispec.Descriptor) {
	t.Helper()
	img, subject := debianImage(t)
	stored, err := scan.NewIndexer(scan.IndexOptions{}).Inventory(context.Background(), img, subject.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	return stored, stored.Report(loadSharedDB(t), scan.Policy{FailOn: osv.High}), subject
}

func TestReportArtifact(t *testing.T) {
	t.Parallel()
	_, r, subject := scanned(t)
	when := time.Date(2026, 5, 1, 10, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	a, err := ReportArtifact(subject, r, when)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(a.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	wantAnn := map[string]string{
		ocispec.AnnotationCreated:             "2026-05-01T08:00:00Z",
		AnnotationDBDigest:                    loadSharedDB(t).Digest,
		AnnotationDBModified:                  loadSharedDB(t).Modified.UTC().Format(time.RFC3339),
		AnnotationFindings:                    "28",
		AnnotationPackages:                    fmt.Sprint(r.Packages),
		AnnotationSeverityPrefix + "critical": "0",
		AnnotationSeverityPrefix + "high":     "0",
		AnnotationSeverityPrefix + "medium":   "0",
		AnnotationSeverityPrefix + "low":      "0",
		AnnotationSeverityPrefix + "unknown":  "28",
	}
	if diff := cmp.Diff(wantAnn, m.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&subject, m.Subject); diff != "" {
		t.Errorf("subject (-want +got):\n%s", diff)
	}
	if m.ArtifactType != ArtifactTypeReport || m.Config.MediaType != ocispec.MediaTypeEmptyJSON || m.Config.Size != 2 {
		t.Errorf("manifest %s", a.Manifest)
	}
	var s store
	s.push(t, a)
	back, bm, err := ReadReport(t.Context(), s.fetch, a.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, back); diff != "" {
		t.Errorf("report round trip (-want +got):\n%s", diff)
	}
	if bm.Subject.Digest != subject.Digest {
		t.Errorf("read subject %v", bm.Subject)
	}
	if _, _, err := ReadInventory(t.Context(), s.fetch, a.Manifest); !errors.Is(err, ErrInvalidArtifact) {
		t.Errorf("report read as inventory: %v", err)
	}
	if _, err := ReportArtifact(ocispec.Descriptor{Digest: "sha256:nope"}, r, when); !errors.Is(err, ErrInvalidArtifact) {
		t.Errorf("bad subject: %v", err)
	}
}

func TestInventoryArtifact(t *testing.T) {
	t.Parallel()
	stored, r, subject := scanned(t)
	a, err := InventoryArtifact(subject, stored, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var s store
	s.push(t, a)
	back, _, err := ReadInventory(t.Context(), s.fetch, a.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stored, back); diff != "" {
		t.Errorf("inventory round trip (-want +got):\n%s", diff)
	}
	// What the server does after a database import: re-match from the stored inventory.
	again, c := scan.Rematch(back, r, loadSharedDB(t), scan.Policy{FailOn: osv.High})
	if c.Changed() || len(again.Findings) != len(r.Findings) {
		t.Errorf("rematch of the stored inventory changed: %+v", c)
	}
}

// TestFailureArtifact: a "scan failed" verdict round-trips with its
// reason, its subject and reserved annotation; a document that is no
// failure is refused.
func TestFailureArtifact(t *testing.T) {
	t.Parallel()
	_, _, subject := scanned(t)
	const reason = "scan failed: gzip: invalid header"
	a, err := FailureArtifact(subject, reason, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !ReservedAnnotation(AnnotationStatus) || a.Descriptor.ArtifactType != ArtifactTypeFailure {
		t.Errorf("failure artifact of type %q, reserved annotation %v", a.Descriptor.ArtifactType, ReservedAnnotation(AnnotationStatus))
	}
	var s store
	s.push(t, a)
	f, m, err := ReadFailure(t.Context(), s.fetch, a.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if f.Status != StatusFailed || f.Reason != reason || m.Subject == nil || m.Subject.Digest != subject.Digest ||
		m.Annotations[AnnotationStatus] != StatusFailed {
		t.Errorf("read back %+v, subject %v, annotations %v", f, m.Subject, m.Annotations)
	}
	if _, _, err := ReadReport(t.Context(), s.fetch, a.Manifest); !errors.Is(err, ErrInvalidArtifact) {
		t.Errorf("a failure read as a report: %v", err)
	}
}

// TestReserved: the types the registry writes itself are reserved, in any
// case; other artifact types, the SBOM's included, are not.
func TestReserved(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		mediaType string
		want      bool
	}{
		{ArtifactTypeReport, true},
		{ArtifactTypeInventory, true},
		{ArtifactTypeFailure, true},
		{ArtifactTypeVulnDB, true},
		{MediaTypeVulnDBConfig, true},
		{"Application/Vnd.Portcullis.Scan.Report.v1+json", true},
		{"application/vnd.portcullis.scan.future.v2+json", true},
		{ArtifactTypeSBOM, false},
		{"application/spdx+json", false},
		{"application/vnd.oci.image.config.v1+json", false},
		{"application/vnd.portcullis.scanner", false},
		{"", false},
	} {
		if got := Reserved(tt.mediaType); got != tt.want {
			t.Errorf("Reserved(%q) = %v, want %v", tt.mediaType, got, tt.want)
		}
	}
}
