package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan"
)

// blobsFetch serves the given blobs by their digests.
func blobsFetch(blobs ...[]byte) Fetch {
	m := map[digest.Digest][]byte{}
	for _, b := range blobs {
		m[digest.FromBytes(b)] = b
	}
	return func(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
		b, ok := m[d]
		if !ok {
			return nil, fmt.Errorf("no blob %s", d)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

// FuzzLoadDBManifest feeds LoadDB arbitrary manifests over a store holding a valid
// database's blobs.
func FuzzLoadDBManifest(f *testing.F) {
	a, s := smallDB(f)
	var blobs [][]byte
	for _, b := range s.blobs {
		blobs = append(blobs, b)
	}
	f.Add(a.Manifest)
	f.Add(editManifest(f, a.Manifest, func(m *ocispec.Manifest) { m.Layers = m.Layers[:1] }))
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.portcullis.vulndb.v1+json","config":{},"layers":[]}`))
	f.Add([]byte(`null`))
	fetch := blobsFetch(blobs...)
	f.Fuzz(func(t *testing.T, manifest []byte) {
		db, err := LoadDB(context.Background(), fetch, manifest, LoadOptions{MaxBytes: 1 << 20})
		if err == nil && (db == nil || db.Digest == "") {
			t.Fatal("nil error without a database")
		}
	})
}

// FuzzLoadDBContent feeds LoadDB a well-formed manifest over arbitrary config and layer
// content (the manifest is rewritten to their digests).
func FuzzLoadDBContent(f *testing.F) {
	a, s := smallDB(f)
	var m ocispec.Manifest
	json.Unmarshal(a.Manifest, &m)
	f.Add(s.blobs[m.Config.Digest], s.blobs[m.Layers[0].Digest], "PyPI")
	f.Add([]byte(`{"format":1,"digest":"sha256:00","ecosystems":[{"name":"npm"}]}`), zipBytes(f, map[string]string{"a.json": `{"id":"A","modified":"2024-01-01T00:00:00Z"}`}), "npm")
	f.Add([]byte(`{}`), []byte("PK\x03\x04"), "Go")
	f.Fuzz(func(t *testing.T, config, layer []byte, eco string) {
		if len(layer) == 0 {
			return
		}
		cd := ocispec.Descriptor{MediaType: MediaTypeVulnDBConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
		ld := ocispec.Descriptor{MediaType: MediaTypeVulnDBLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer)),
			Annotations: map[string]string{AnnotationEcosystem: eco}}
		man := editManifest(t, a.Manifest, func(m *ocispec.Manifest) {
			m.Config, m.Layers = cd, []ocispec.Descriptor{ld}
		})
		db, err := LoadDB(context.Background(), blobsFetch(config, layer), man, LoadOptions{MaxBytes: 1 << 20})
		if err == nil && db.Ecosystems[0] != eco {
			t.Fatalf("loaded ecosystems %v from a layer named %q", db.Ecosystems, eco)
		}
	})
}

// FuzzReadDocuments feeds the report, inventory and SBOM readers an arbitrary document
// under a valid manifest of each type, and arbitrary manifests.
func FuzzReadDocuments(f *testing.F) {
	img, subject := debianImage(f)
	stored, err := scan.NewIndexer(scan.IndexOptions{}).Inventory(context.Background(), img, subject.Digest.String())
	if err != nil {
		f.Fatal(err)
	}
	a, s := smallDB(f)
	db, err := LoadDB(context.Background(), s.fetch, a.Manifest, LoadOptions{})
	if err != nil {
		f.Fatal(err)
	}
	r := stored.Report(db, scan.Policy{})
	rb, _ := json.Marshal(r)
	ib, _ := stored.Encode()
	sb, _ := SBOM(stored, r.DB.Modified)
	f.Add(rb, []byte(nil))
	f.Add(ib, []byte(nil))
	f.Add(sb, []byte(nil))
	f.Add([]byte(`{"findings":[{"severity":{"level":"HIGH"}}]}`), []byte(`{"schemaVersion":2}`))
	f.Fuzz(func(t *testing.T, doc, manifest []byte) {
		ctx := context.Background()
		fetch := blobsFetch(doc, emptyConfig)
		for _, tt := range []struct {
			artifactType, mediaType string
		}{{ArtifactTypeReport, MediaTypeReport}, {ArtifactTypeInventory, MediaTypeInventory}, {ArtifactTypeSBOM, MediaTypeSBOM}} {
			a, err := referrer(tt.artifactType, tt.mediaType, subject, doc, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, man := range [][]byte{a.Manifest, manifest} {
				switch tt.artifactType {
				case ArtifactTypeReport:
					if r, _, err := ReadReport(ctx, fetch, man); err == nil && r == nil {
						t.Fatal("nil report without error")
					}
				case ArtifactTypeInventory:
					inv, _, err := ReadInventory(ctx, fetch, man)
					if err == nil {
						// A stored inventory that reads must re-match without panicking.
						scan.Rematch(inv, nil, db, scan.Policy{})
					} else if !errors.Is(err, ErrInvalidArtifact) && !errors.Is(err, scan.ErrMalformedInventory) &&
						!errors.Is(err, scan.ErrStaleInventory) && !errors.Is(err, ErrBlobMismatch) && !errors.Is(err, ErrTooLarge) && man != nil && len(man) > 0 && bytes.Equal(man, a.Manifest) {
						t.Fatalf("unexpected error class: %v", err)
					}
				case ArtifactTypeSBOM:
					ReadSBOM(ctx, fetch, man)
				}
			}
		}
		ParseSBOM(doc)
		scan.DecodeInventory(doc)
	})
}
