package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan/vulndb"
)

// DBConfigFormat is the version of DBConfig.
const DBConfigFormat = 1

// maxDBLayers bounds the number of ecosystems of a database artifact.
const maxDBLayers = 256

// DBConfig is the config blob of a database artifact.
type DBConfig struct {
	// Format is DBConfigFormat.
	Format int `json:"format"`
	// Digest is the database version, vulndb.DB.Digest.
	Digest string `json:"digest"`
	// Modified is the latest modified time of any record.
	Modified time.Time `json:"modified"`
	// Records counts all records, withdrawn ones included.
	Records int `json:"records"`
	// Ecosystems describe the layers, sorted by name.
	Ecosystems []EcosystemInfo `json:"ecosystems"`
}

// EcosystemInfo describes one ecosystem's layer.
type EcosystemInfo struct {
	Name    string `json:"name"`
	Records int    `json:"records"`
	// Digest is the layer's digest (sha256 of its all.zip).
	Digest digest.Digest `json:"digest"`
}

// PackOptions tunes PackDB. The zero value means the defaults.
type PackOptions struct {
	// Created is the created annotation; zero means the database's Modified time, so that
	// packing the same bundle twice gives the same manifest.
	Created time.Time
	// DB are the options the bundle is checked with: PackDB loads it, and refuses a
	// bundle that does not load.
	DB vulndb.Options
}

// PackDB packs the bundle directory dir (any layout vulndb.Load reads) as a database
// artifact: one MediaTypeVulnDBLayer layer per ecosystem, its all.zip as it is, annotated
// with its ecosystem, and a DBConfig. Layer blobs are opened from the files when pushed, so
// the files must not change until then (the registry would refuse the content). It
// returns vulndb's errors when the bundle does not load, and the DBConfig it wrote.
func PackDB(ctx context.Context, dir string, opts PackOptions) (*Artifact, *DBConfig, error) {
	files, err := vulndb.FindArchives(dir)
	if err != nil {
		return nil, nil, err
	}
	cfg := &DBConfig{Format: DBConfigFormat}
	sums := map[string]string{}
	var layers []Blob
	for _, af := range files {
		f, err := os.Open(af.Path)
		if err != nil {
			return nil, nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		db, err := vulndb.LoadArchives(ctx, []vulndb.Archive{{Ecosystem: af.Ecosystem, Reader: f, Size: fi.Size()}}, opts.DB)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		h := sha256.New()
		if err := hashFile(af.Path, h); err != nil {
			return nil, nil, err
		}
		dgst := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
		sums[af.Ecosystem] = dgst.Encoded()
		cfg.Records += db.Records
		if db.Modified.After(cfg.Modified) {
			cfg.Modified = db.Modified
		}
		cfg.Ecosystems = append(cfg.Ecosystems, EcosystemInfo{Name: af.Ecosystem, Records: db.Records, Digest: dgst})
		path := af.Path
		layers = append(layers, Blob{
			Descriptor: ocispec.Descriptor{
				MediaType: MediaTypeVulnDBLayer,
				Digest:    dgst,
				Size:      fi.Size(),
				Annotations: map[string]string{
					AnnotationEcosystem:     af.Ecosystem,
					ocispec.AnnotationTitle: af.Ecosystem + "/all.zip",
				},
			},
			Open: func() (io.ReadCloser, error) { return os.Open(path) },
		})
	}
	cfg.Digest = vulndb.BundleDigest(sums)
	cb, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("encode config: %w", err)
	}
	when := opts.Created
	if when.IsZero() {
		when = cfg.Modified
	}
	annotations := map[string]string{
		ocispec.AnnotationCreated: created(when),
		AnnotationDBDigest:        cfg.Digest,
		AnnotationDBModified:      cfg.Modified.UTC().Format(time.RFC3339),
	}
	a, err := build(ArtifactTypeVulnDB, nil, append([]Blob{bytesBlob(MediaTypeVulnDBConfig, cb, nil)}, layers...), annotations)
	if err != nil {
		return nil, nil, err
	}
	return a, cfg, nil
}

func hashFile(p string, h hash.Hash) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

// LoadOptions tunes LoadDB. The zero value means the defaults.
type LoadOptions struct {
	// DB are the options the records are loaded with.
	DB vulndb.Options
	// TempDir is where layers larger than InMemoryBytes are spooled; "" means
	// os.TempDir(). The files are removed before LoadDB returns.
	TempDir string
	// InMemoryBytes is the largest layer kept in memory (default 32 MiB).
	InMemoryBytes int64
	// MaxBytes caps the total size of the layers (default 4 GiB).
	MaxBytes int64
}

// LoadDB validates a database artifact and loads it: the manifest (ArtifactTypeVulnDB, a
// DBConfig config, MediaTypeVulnDBLayer layers each naming a distinct valid ecosystem), the
// config (its digest and ecosystems must be those the layers give), then each layer,
// checked against its digest while it is read. The DB's Digest is the config's. It returns
// ErrInvalidArtifact, ErrBlobMismatch, ErrTooLarge, the fetch function's errors (wrapped) and
// vulndb's errors for the records.
func LoadDB(ctx context.Context, fetch Fetch, manifest []byte, opts LoadOptions) (*vulndb.DB, error) {
	if opts.InMemoryBytes <= 0 {
		opts.InMemoryBytes = 32 << 20
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 4 << 30
	}
	m, err := parseTyped(manifest, ArtifactTypeVulnDB)
	if err != nil {
		return nil, err
	}
	if m.Config.MediaType != MediaTypeVulnDBConfig {
		return nil, fmt.Errorf("%w: config media type %q, want %s", ErrInvalidArtifact, m.Config.MediaType, MediaTypeVulnDBConfig)
	}
	if len(m.Layers) == 0 || len(m.Layers) > maxDBLayers {
		return nil, fmt.Errorf("%w: %d layers, want 1 to %d", ErrInvalidArtifact, len(m.Layers), maxDBLayers)
	}
	sums := map[string]string{}
	var total int64
	for i, l := range m.Layers {
		eco := l.Annotations[AnnotationEcosystem]
		switch {
		case l.MediaType != MediaTypeVulnDBLayer:
			return nil, fmt.Errorf("%w: layer %d media type %q, want %s", ErrInvalidArtifact, i, l.MediaType, MediaTypeVulnDBLayer)
		case !vulndb.ValidEcosystem(eco):
			return nil, fmt.Errorf("%w: layer %d ecosystem %q", ErrInvalidArtifact, i, eco)
		case sums[eco] != "":
			return nil, fmt.Errorf("%w: ecosystem %q in two layers", ErrInvalidArtifact, eco)
		case l.Size <= 0:
			return nil, fmt.Errorf("%w: layer %d is empty", ErrInvalidArtifact, i)
		}
		sums[eco] = l.Digest.Encoded()
		total += l.Size
		if total > opts.MaxBytes {
			return nil, fmt.Errorf("%w: layers over %d bytes", ErrTooLarge, opts.MaxBytes)
		}
	}
	want := vulndb.BundleDigest(sums)

	cb, err := readBlob(ctx, fetch, m.Config, MaxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var cfg DBConfig
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("%w: config: %v", ErrInvalidArtifact, err)
	}
	if cfg.Format != DBConfigFormat {
		return nil, fmt.Errorf("%w: config format %d, want %d", ErrInvalidArtifact, cfg.Format, DBConfigFormat)
	}
	if cfg.Digest != want {
		return nil, fmt.Errorf("%w: config names database %s, the layers are %s", ErrInvalidArtifact, cfg.Digest, want)
	}
	if len(cfg.Ecosystems) != len(sums) {
		return nil, fmt.Errorf("%w: config lists %d ecosystems, the manifest %d", ErrInvalidArtifact, len(cfg.Ecosystems), len(sums))
	}
	for _, e := range cfg.Ecosystems {
		if sums[e.Name] != e.Digest.Encoded() {
			return nil, fmt.Errorf("%w: config ecosystem %q does not match the layers", ErrInvalidArtifact, e.Name)
		}
	}

	archives := make([]vulndb.Archive, 0, len(m.Layers))
	for _, l := range m.Layers {
		eco := l.Annotations[AnnotationEcosystem]
		ra, cleanup, err := spool(ctx, fetch, l, opts)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", eco, err)
		}
		defer cleanup()
		archives = append(archives, vulndb.Archive{Ecosystem: eco, Reader: ra, Size: l.Size})
	}
	db, err := vulndb.LoadArchives(ctx, archives, opts.DB)
	if err != nil {
		return nil, err
	}
	if db.Digest != want {
		// LoadArchives hashed what spool verified; a difference is a bug, not bad input.
		return nil, fmt.Errorf("%w: loaded database %s, want %s", ErrBlobMismatch, db.Digest, want)
	}
	return db, nil
}

// spool fetches a layer into memory or a temporary file, checking its size and digest.
func spool(ctx context.Context, fetch Fetch, d ocispec.Descriptor, opts LoadOptions) (io.ReaderAt, func(), error) {
	if d.Size <= opts.InMemoryBytes {
		b, err := readBlob(ctx, fetch, d, opts.InMemoryBytes)
		if err != nil {
			return nil, nil, err
		}
		return bytes.NewReader(b), func() {}, nil
	}
	f, err := os.CreateTemp(opts.TempDir, "portcullis-vulndb-*.zip")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	if err := copyVerified(ctx, fetch, d, f); err != nil {
		cleanup()
		return nil, nil, err
	}
	return f, cleanup, nil
}

func copyVerified(ctx context.Context, fetch Fetch, d ocispec.Descriptor, w io.Writer) error {
	rc, err := fetch(ctx, d.Digest)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rc, d.Size+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", d.Digest, err)
	}
	if n != d.Size {
		return fmt.Errorf("%w: %s: got at least %d bytes, want %d", ErrBlobMismatch, d.Digest, n, d.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Digest.Encoded() {
		return fmt.Errorf("%w: %s has content sha256:%s", ErrBlobMismatch, d.Digest, got)
	}
	return nil
}
