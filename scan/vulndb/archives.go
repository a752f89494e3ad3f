package vulndb

import (
	"archive/zip"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/scan/osv"
)

// ErrBadArchive is returned by LoadArchives when an Archive's ecosystem name is not a
// valid directory name or appears twice.
var ErrBadArchive = errors.New("invalid database archive")

// Archive is one ecosystem's all.zip, read through an io.ReaderAt: a file, a spooled
// registry blob, bytes in memory.
type Archive struct {
	// Ecosystem is the name of the directory the archive would sit in ("Debian", "Go").
	Ecosystem string
	// Reader holds Size bytes of zip.
	Reader io.ReaderAt
	Size   int64
}

// ArchiveFile is an all.zip found by FindArchives.
type ArchiveFile struct {
	Ecosystem string
	Path      string
}

// FindArchives lists the <Ecosystem>/all.zip files of a bundle directory as Load finds
// them (DIR/osv, then DIR/osv-scalibr, then DIR itself; the first layout holding any
// archive wins), sorted by ecosystem. It returns ErrNoDatabase when there are none.
func FindArchives(dir string) ([]ArchiveFile, error) {
	for _, base := range []string{filepath.Join(dir, "osv"), filepath.Join(dir, "osv-scalibr"), dir} {
		ents, err := os.ReadDir(base)
		if err != nil {
			continue
		}
		var out []ArchiveFile
		for _, e := range ents {
			if !e.IsDir() || !ecosystemDir().MatchString(e.Name()) {
				continue
			}
			p := filepath.Join(base, e.Name(), "all.zip")
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				out = append(out, ArchiveFile{Ecosystem: e.Name(), Path: p})
			}
		}
		if len(out) > 0 {
			slices.SortFunc(out, func(a, b ArchiveFile) int { return strings.Compare(a.Ecosystem, b.Ecosystem) })
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w in %s", ErrNoDatabase, dir)
}

// ValidEcosystem reports whether name can be an ecosystem directory of a bundle.
func ValidEcosystem(name string) bool { return ecosystemDir().MatchString(name) }

// BundleDigest computes DB.Digest from the sha256 (hex) of each ecosystem's all.zip, keyed
// by ecosystem: sha256 over the "<Ecosystem>/all.zip <hex>" lines sorted by ecosystem. Load
// and LoadArchives give a bundle the same digest whatever it was read from.
func BundleDigest(sums map[string]string) string {
	ecos := make([]string, 0, len(sums))
	for e := range sums {
		ecos = append(ecos, e)
	}
	slices.Sort(ecos)
	h := sha256.New()
	for _, e := range ecos {
		fmt.Fprintf(h, "%s/all.zip %s\n", e, sums[e])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// LoadArchives loads a bundle from its archives, as Load does from a directory: the DB gets
// the same Digest, Records and Modified. It returns ErrBadArchive for an invalid or repeated
// ecosystem name, ErrNoDatabase for no archives, and Load's errors for the contents.
func LoadArchives(ctx context.Context, archives []Archive, opts Options) (*DB, error) {
	if len(archives) == 0 {
		return nil, ErrNoDatabase
	}
	if opts.MaxTotalBytes <= 0 {
		opts.MaxTotalBytes = 4 << 30
	}
	archives = slices.Clone(archives)
	slices.SortFunc(archives, func(a, b Archive) int { return cmp.Compare(a.Ecosystem, b.Ecosystem) })
	db := &DB{index: make(map[key][]Entry), keys: make(map[string]bool), bases: make(map[string]bool)}
	budget := opts.MaxTotalBytes
	sums := make(map[string]string, len(archives))
	for _, a := range archives {
		if !ecosystemDir().MatchString(a.Ecosystem) {
			return nil, fmt.Errorf("%w: ecosystem %q", ErrBadArchive, a.Ecosystem)
		}
		if _, dup := sums[a.Ecosystem]; dup {
			return nil, fmt.Errorf("%w: ecosystem %q twice", ErrBadArchive, a.Ecosystem)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sum, err := db.loadZip(ctx, a, &budget, opts)
		if err != nil {
			return nil, fmt.Errorf("load %s/all.zip: %w", a.Ecosystem, err)
		}
		sums[a.Ecosystem] = sum
		db.Ecosystems = append(db.Ecosystems, a.Ecosystem)
	}
	db.Digest = BundleDigest(sums)
	return db, nil
}

func (db *DB) loadZip(ctx context.Context, a Archive, budget *int64, opts Options) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(a.Reader, 0, a.Size)); err != nil {
		return "", err
	}
	zr, err := zip.NewReader(a.Reader, a.Size)
	if err != nil {
		return "", err
	}
	for _, zf := range zr.File {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if zf.FileInfo().IsDir() {
			continue
		}
		rec, err := readRecord(zf, budget)
		if errors.Is(err, osv.ErrInvalidRecord) && opts.SkipInvalid {
			db.Rejected = append(db.Rejected, fmt.Errorf("%s/all.zip: %s: %w", a.Ecosystem, zf.Name, err))
			continue
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", zf.Name, err)
		}
		db.add(rec)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
