// Package vulndb loads an offline OSV database bundle and indexes it by ecosystem and package
// name for matching.
//
// A bundle is a directory in osv.dev's export layout: one all.zip per ecosystem holding one
// JSON record per file, under DIR/osv/<Ecosystem>/all.zip, DIR/osv-scalibr/<Ecosystem>/all.zip
// (the layout osv-scanner's --local-db-path uses) or DIR/<Ecosystem>/all.zip. The package
// must not import scan or inventory.
package vulndb

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/scan/osv"
)

// Errors returned by Load.
var (
	// ErrNoDatabase is returned when the directory holds no <Ecosystem>/all.zip in any of the
	// known layouts.
	ErrNoDatabase = errors.New("no OSV database found")
	// ErrTooLarge is returned when an archive or a record inside it is over the size limits.
	ErrTooLarge = errors.New("database over size limit")
)

// Options tunes Load. The zero value means the defaults.
type Options struct {
	// MaxTotalBytes caps the uncompressed bytes read from all archives (default 4 GiB).
	MaxTotalBytes int64
	// SkipInvalid skips records that fail validation, keeping their errors in DB.Rejected,
	// instead of failing the load.
	SkipInvalid bool
	// CacheDir, for a DB from Open, is where what it learns of each archive is kept for the
	// next Open (see Open); "" keeps nothing.
	CacheDir string
}

// DB is a loaded, indexed database. It is safe for concurrent reads.
type DB struct {
	// Digest identifies the bundle's contents: sha256 over the sorted list of
	// "<Ecosystem>/all.zip <sha256 of the file>" lines.
	Digest string `json:"digest"`
	// Modified is the latest modified time of any record: the database's version.
	Modified time.Time `json:"modified"`
	// Records counts the records loaded (withdrawn ones included).
	Records int `json:"records"`
	// Ecosystems lists the ecosystems found, sorted.
	Ecosystems []string `json:"ecosystems"`
	// Rejected holds the errors of records skipped under Options.SkipInvalid.
	Rejected []error `json:"-"`

	index map[key][]Entry
	// lazy is set for a DB from Open: what it has loaded of the bundle.
	lazy *lazyIndex
	// keys holds every ecosystem entries are indexed under, bases their names before
	// the first colon.
	keys, bases map[string]bool
}

type key struct{ ecosystem, name string }

// Entry is one affected entry of one record.
type Entry struct {
	Record   *osv.Record
	Affected *osv.Affected
}

var ecosystemDir = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._:-]*$`) })

// Load reads every <Ecosystem>/all.zip of the bundle in dir. A malformed record fails the load
// with an error naming the archive and the file inside it (unless Options.SkipInvalid is set);
// a missing database returns ErrNoDatabase; oversized input returns ErrTooLarge.
func Load(ctx context.Context, dir string, opts Options) (*DB, error) {
	files, err := FindArchives(dir)
	if err != nil {
		return nil, err
	}
	archives := make([]Archive, 0, len(files))
	for _, af := range files {
		f, err := os.Open(af.Path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		archives = append(archives, Archive{Ecosystem: af.Ecosystem, Reader: f, Size: fi.Size()})
	}
	db, err := LoadArchives(ctx, archives, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return db, nil
}

func readRecord(zf *zip.File, budget *int64) (*osv.Record, error) {
	if zf.UncompressedSize64 > osv.MaxRecordBytes {
		return nil, fmt.Errorf("%w: record of %d bytes", ErrTooLarge, zf.UncompressedSize64)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// The size in the zip header may lie; read at most one byte past the limit.
	data, err := io.ReadAll(io.LimitReader(rc, osv.MaxRecordBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > osv.MaxRecordBytes {
		return nil, fmt.Errorf("%w: record over %d bytes", ErrTooLarge, osv.MaxRecordBytes)
	}
	*budget -= int64(len(data))
	if *budget < 0 {
		return nil, fmt.Errorf("%w: total uncompressed size", ErrTooLarge)
	}
	return osv.Parse(data)
}

func (db *DB) add(r *osv.Record) {
	db.Records++
	if r.Modified.After(db.Modified) {
		db.Modified = r.Modified
	}
	if r.Withdrawn != nil {
		return
	}
	for i := range r.Affected {
		a := &r.Affected[i]
		if a.Package.Name == "" {
			continue
		}
		k := key{IndexEcosystem(a.Package.Ecosystem), NormalizeName(a.Package.Ecosystem, a.Package.Name)}
		db.index[k] = append(db.index[k], Entry{Record: r, Affected: a})
		if !db.keys[k.ecosystem] {
			db.keys[k.ecosystem] = true
			db.bases[Base(k.ecosystem)] = true
		}
	}
}

// Lookup returns the affected entries of non-withdrawn records for a package. ecosystem is
// the exact ecosystem string, release included ("Debian:12", "Alpine:v3.20", "npm"), or for
// Red Hat and SUSE the release key IndexEcosystem files their streams under; records whose
// ecosystem carries no release ("Debian") apply to every release and are returned too.
// For a DB from Open it returns what Need loaded for the package. The result must not be
// modified.
func (db *DB) Lookup(ecosystem, name string) []Entry {
	name = NormalizeName(ecosystem, name)
	out := db.index[key{ecosystem, name}]
	if base := Base(ecosystem); base != ecosystem {
		if more := db.index[key{base, name}]; len(more) > 0 {
			out = append(slices.Clip(out), more...)
		}
	}
	if db.lazy != nil {
		out = slices.Clip(out)
		for _, k := range db.lookupKeys(ecosystem, name) {
			out = db.lazy.lookup(k, out)
		}
	}
	return out
}

// Covers reports whether Lookup can find anything for a package of ecosystem: some record
// is filed under it ("Debian:12") or under its name without a release ("Debian"), whichever
// archive the record came from. A database without records for a release cannot tell a
// package of it from a safe one.
func (db *DB) Covers(ecosystem string) bool {
	return ecosystem != "" && (db.keys[ecosystem] || db.keys[Base(ecosystem)])
}

// CoversBase reports whether any record is filed under ecosystem's name, in any release.
func (db *DB) CoversBase(ecosystem string) bool { return db.bases[Base(ecosystem)] }

// Base returns an ecosystem's name without its release: "Debian" for "Debian:12", "Red Hat"
// for "Red Hat:enterprise_linux:9".
func Base(ecosystem string) string {
	base, _, _ := strings.Cut(ecosystem, ":")
	return base
}

// NormalizeName returns the form of a package name used as the index key: PyPI names are
// normalized as PEP 503 says (lower case, runs of "-", "_", "." as one "-"); other
// ecosystems compare names exactly.
func NormalizeName(ecosystem, name string) string {
	if ecosystem != "PyPI" {
		return name
	}
	var b strings.Builder
	sep := false
	for _, c := range strings.ToLower(name) {
		if c == '-' || c == '_' || c == '.' {
			sep = true
			continue
		}
		if sep && b.Len() > 0 {
			b.WriteByte('-')
		}
		sep = false
		b.WriteRune(c)
	}
	return b.String()
}
