package vulndb

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/flate"

	"github.com/portcullis/portcullis/scan/osv"
)

// Open reads the index of the bundle in dir and no record: the archives it holds (found as
// Load finds them), their digests and how many records each lists. The DB it returns has
// Load's Digest and Records; Need then loads what a scan looks up, and Lookup, Covers and
// CoversBase answer for the ecosystems Need was given. Modified is the latest modified time
// of the records of the archives loaded so far.
//
// It returns Load's errors for a missing or unreadable bundle; malformed records are found
// by Need, and only in the archives it loads.
func Open(ctx context.Context, dir string, opts Options) (*DB, error) {
	files, err := FindArchives(dir)
	if err != nil {
		return nil, err
	}
	if opts.MaxTotalBytes <= 0 {
		opts.MaxTotalBytes = 4 << 30
	}
	db := &DB{
		index: make(map[key][]Entry), keys: make(map[string]bool), bases: make(map[string]bool),
		lazy: &lazyIndex{opts: opts, budget: opts.MaxTotalBytes, archives: make(map[string]*lazyArchive), entries: make(map[key][]lazyEntry)},
	}
	sums := make(map[string]string, len(files))
	for _, af := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		a := &lazyArchive{ecosystem: af.Ecosystem, path: af.Path}
		n, err := a.identify(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("%s: load %s/all.zip: %w", dir, af.Ecosystem, err)
		}
		sums[af.Ecosystem] = a.sum
		db.Records += n
		db.Ecosystems = append(db.Ecosystems, af.Ecosystem)
		db.lazy.archives[af.Ecosystem] = a
	}
	db.Digest = BundleDigest(sums)
	return db, nil
}

// identify sets the archive's sha256 and returns the number of records it holds: from the
// cache in cacheDir if the file is the one they were computed for, else by reading it (and
// then caching them).
func (a *lazyArchive) identify(cacheDir string) (int, error) {
	if cacheDir == "" {
		sum, n, err := indexArchive(a.path, nil)
		a.sum = sum
		return n, err
	}
	fi, err := os.Stat(a.path)
	if err != nil {
		return 0, err
	}
	a.id = statID(fi)
	if sum, n, ok := cachedSum(cacheDir, a.path, a.id); ok {
		a.sum = sum
		return n, nil
	}
	sum, n, err := indexArchive(a.path, &a.id)
	if err != nil {
		return 0, err
	}
	a.sum = sum
	writeSum(cacheDir, a.path, a.id, sum, n)
	return n, nil
}

// indexArchive returns the sha256 (hex) of the zip at path and the number of files its
// central directory lists; id, if not nil, is set to the file's identity before it is read.
func indexArchive(path string, id *fileID) (string, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	if id != nil {
		fi, err := f.Stat()
		if err != nil {
			return "", 0, err
		}
		*id = statID(fi)
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	n, ok := countFiles(f, size)
	if !ok {
		// What countFiles does not walk (zip64, a damaged directory), archive/zip reads or
		// refuses.
		zr, err := zip.NewReader(f, size)
		if err != nil {
			return "", 0, err
		}
		n = 0
		for _, zf := range zr.File {
			if !zf.FileInfo().IsDir() {
				n++
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// countFiles counts the entries of a zip's central directory that are not directories,
// reading only the directory's fixed headers and names (archive/zip builds a File for each).
// It reports false for what it does not walk: a zip64 archive, or a directory that does not
// hold the entries its end record announces.
func countFiles(r io.ReaderAt, size int64) (int, bool) {
	const (
		endLen  = 22
		endSig  = 0x06054b50
		dirSig  = 0x02014b50
		headLen = 46
	)
	le16 := func(b []byte) int { return int(b[0]) | int(b[1])<<8 }
	le32 := func(b []byte) int { return le16(b) | le16(b[2:])<<16 }
	tail := make([]byte, min(size, endLen+0xffff))
	if len(tail) < endLen {
		return 0, false
	}
	if _, err := r.ReadAt(tail, size-int64(len(tail))); err != nil {
		return 0, false
	}
	end := -1
	for i := len(tail) - endLen; i >= 0; i-- {
		if le32(tail[i:]) == endSig && i+endLen+le16(tail[i+20:]) == len(tail) {
			end = i
			break
		}
	}
	if end < 0 {
		return 0, false
	}
	entries, dirSize, off := le16(tail[end+10:]), le32(tail[end+12:]), le32(tail[end+16:])
	if entries == 0xffff || dirSize == 0xffffffff || off == 0xffffffff || int64(off)+int64(dirSize) > size-int64(len(tail)-end) {
		return 0, false // zip64, or not where it says
	}
	dir := make([]byte, dirSize)
	if _, err := r.ReadAt(dir, int64(off)); err != nil {
		return 0, false
	}
	n := 0
	for range entries {
		if len(dir) < headLen || le32(dir) != dirSig {
			return 0, false
		}
		nameLen, extraLen, commentLen := le16(dir[28:]), le16(dir[30:]), le16(dir[32:])
		total := headLen + nameLen + extraLen + commentLen
		if len(dir) < total {
			return 0, false
		}
		if name := dir[headLen : headLen+nameLen]; len(name) == 0 || name[len(name)-1] != '/' {
			n++
		}
		dir = dir[total:]
	}
	return n, len(dir) == 0
}

// lazyIndex is what an opened DB has loaded: the archives read so far, and the records
// filed under each package name, decoded on first look-up.
type lazyIndex struct {
	opts     Options
	budget   int64
	archives map[string]*lazyArchive
	entries  map[key][]lazyEntry
}

type lazyArchive struct {
	ecosystem, path, sum string
	// id is the file's identity when it was hashed (with Options.CacheDir only).
	id     fileID
	loaded bool
	// pending are the records no Need has decoded yet.
	pending []*lazyRecord
	// index, read from the cache, lists the records and the keys they are filed under.
	index *archiveIndex
}

// lazyEntry is the i-th affected entry of a record not decoded yet.
type lazyEntry struct {
	rec *lazyRecord
	i   int
}

// lazyRecord is one record's compressed bytes, decoded once when first looked up.
type lazyRecord struct {
	archive, file string
	method        uint16
	off           int64 // of raw in the archive
	raw           []byte
	crc           uint32
	size          int

	once sync.Once
	rec  *osv.Record
	err  error
	// rejected is set once Need has kept err in DB.Rejected.
	rejected bool
}

// header is the part of a record that indexing reads.
type header struct {
	Modified  time.Time  `json:"modified"`
	Withdrawn *time.Time `json:"withdrawn"`
	Affected  []struct {
		Package osv.Package `json:"package"`
	} `json:"affected"`
}

// Need loads what look-ups of pkgs read: the archive of each package's ecosystem, named by
// the ecosystem without its release ("Debian" for "Debian:12"), as osv-scanner reads a
// bundle, and the records filed under each package's name. An ecosystem without an archive
// loads nothing. A DB from Load or LoadArchives has everything loaded already.
//
// Each record of an archive is decompressed once, and decoded only when it may concern a
// package of pkgs: one of its JSON strings is one of their names. Lookup,
// Covers and CoversBase are exact for the packages and ecosystems Need was given.
//
// Errors name the archive and the file: a record that is not JSON (where it had to be
// decoded), or an invalid record filed under one of pkgs (kept in Rejected instead under
// Options.SkipInvalid); ErrTooLarge when the records read cross the size limits. Need must
// not run concurrently with the DB's other methods.
func (db *DB) Need(ctx context.Context, pkgs []osv.Package) error {
	if db.lazy == nil {
		return nil
	}
	wants := make(map[*lazyArchive]*want)
	for _, p := range pkgs {
		a := db.lazy.archives[Base(p.Ecosystem)]
		if a == nil {
			continue
		}
		w := wants[a]
		if w == nil {
			w = &want{names: make(map[string]bool), keys: make(map[key]bool)}
			wants[a] = w
		}
		w.ecosystems = append(w.ecosystems, p.Ecosystem)
		for _, k := range db.lookupKeys(p.Ecosystem, p.Name) {
			w.keys[k] = true
		}
		if NormalizeName(p.Ecosystem, p.Name) != p.Name || p.Ecosystem != Base(p.Ecosystem) && NormalizeName(Base(p.Ecosystem), p.Name) != p.Name || Base(p.Ecosystem) == "PyPI" {
			w.all = true // names compared after normalizing: no byte search finds them all
		}
		w.names[p.Name] = true
	}
	for a, w := range wants {
		if err := db.loadLazy(ctx, a, w); err != nil {
			return fmt.Errorf("load %s/all.zip: %w", a.ecosystem, err)
		}
	}
	for _, p := range pkgs {
		for _, k := range db.lookupKeys(p.Ecosystem, p.Name) {
			list := db.lazy.entries[k]
			kept := list[:0]
			for _, le := range list {
				if _, err := le.rec.decode(); err != nil {
					if !db.lazy.opts.SkipInvalid || !errors.Is(err, osv.ErrInvalidRecord) {
						return fmt.Errorf("load %s/all.zip: %s: %w", le.rec.archive, le.rec.file, err)
					}
					if !le.rec.rejected {
						le.rec.rejected = true
						db.Rejected = append(db.Rejected, fmt.Errorf("%s/all.zip: %s: %w", le.rec.archive, le.rec.file, err))
					}
					continue
				}
				kept = append(kept, le)
			}
			db.lazy.entries[k] = kept
		}
	}
	return nil
}

// want is what Need looks for in one archive.
type want struct {
	// names are the package names.
	names map[string]bool
	// ecosystems are the packages' ecosystems, whose Covers and CoversBase must be exact.
	ecosystems []string
	// all: decode every record.
	all bool
	// keys are the index keys Lookup reads for the packages.
	keys map[key]bool
	// build: decode every record's header, to write the archive's index to the cache.
	build bool
}

// covered reports whether Covers and CoversBase are true for every ecosystem of w: once
// they are, no record not holding a name needs decoding.
func (db *DB) covered(w *want) bool {
	for _, e := range w.ecosystems {
		if !db.Covers(e) || !db.CoversBase(e) {
			return false
		}
	}
	return true
}

// concerns reports whether a record may be filed under one of w's names: one of its JSON
// strings is one of them. It reads each string once, whatever the number of names.
func (w *want) concerns(rec []byte) bool {
	if w.all {
		return true
	}
	for i := 0; ; {
		j := bytes.IndexByte(rec[i:], '"')
		if j < 0 {
			return false
		}
		start := i + j
		end, escaped, ok := stringEnd(rec, start)
		if !ok {
			return true // not JSON: let the decoder say so
		}
		if escaped {
			var v string
			if err := json.Unmarshal(rec[start:end], &v); err != nil || w.names[v] {
				return true
			}
		} else if w.names[string(rec[start+1:end-1])] {
			return true
		}
		i = end
	}
}

// lookupKeys are the index keys Lookup reads for a package.
func (db *DB) lookupKeys(ecosystem, name string) []key {
	name = NormalizeName(ecosystem, name)
	keys := []key{{ecosystem, name}}
	if base := Base(ecosystem); base != ecosystem {
		keys = append(keys, key{base, name})
	}
	return keys
}

// loadLazy indexes the records of archive a that concern w by the packages they affect,
// each decompressed once and its header decoded; their compressed bytes are kept for
// Lookup. The first time, it reads the archive and takes every record's modified time; the
// records left aside wait for a later call. Records are decompressed on one goroutine per
// CPU and indexed in the archive's order.
func (db *DB) loadLazy(ctx context.Context, a *lazyArchive, w *want) error {
	cacheDir := db.lazy.opts.CacheDir
	if cacheDir != "" && !a.loaded {
		a.index, _ = readIndex(cacheDir, a.sum)
	}
	if a.index != nil {
		return db.loadIndexed(a, w)
	}
	records := a.pending
	first := !a.loaded
	w.build = first && cacheDir != ""
	if first {
		var err error
		if records, err = a.records(); err != nil {
			return err
		}
		a.loaded = true
	}
	a.pending = nil
	peeks := make([]peek, len(records))
	workers := min(runtime.GOMAXPROCS(0), 4, len(records)/64+1)
	var wg sync.WaitGroup
	for n := range workers {
		lo, hi := n*len(records)/workers, (n+1)*len(records)/workers
		wg.Go(func() {
			fr := flate.NewReader(nil)
			defer fr.Close()
			var buf []byte
			for i := lo; i < hi && ctx.Err() == nil; i++ {
				buf, peeks[i] = records[i].peek(fr, buf, w)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	covered := db.covered(w)
	rejected := len(db.Rejected)
	for i, lr := range records {
		p := &peeks[i]
		if p.err != nil && !errors.Is(p.err, osv.ErrInvalidRecord) {
			return fmt.Errorf("%s: %w", lr.file, p.err)
		}
		if first {
			db.lazy.budget -= int64(p.size)
			if db.lazy.budget < 0 {
				return fmt.Errorf("%w: total uncompressed size", ErrTooLarge)
			}
		}
		if p.err == nil && p.header == nil && !covered {
			p.header, p.err = lr.header() // a record read before the ecosystems were known
		}
		if p.err != nil {
			if !db.lazy.opts.SkipInvalid {
				return fmt.Errorf("%s: %w", lr.file, p.err)
			}
			db.Rejected = append(db.Rejected, fmt.Errorf("%s/all.zip: %s: %w", a.ecosystem, lr.file, p.err))
			continue
		}
		if first && p.modified.After(db.Modified) {
			db.Modified = p.modified
		}
		h := p.header
		if h == nil {
			a.pending = append(a.pending, lr)
			continue
		}
		if h.Withdrawn != nil {
			continue
		}
		for i, af := range h.Affected {
			if af.Package.Name == "" {
				continue
			}
			k := key{IndexEcosystem(af.Package.Ecosystem), NormalizeName(af.Package.Ecosystem, af.Package.Name)}
			db.lazy.entries[k] = append(db.lazy.entries[k], lazyEntry{rec: lr, i: i})
			if !db.keys[k.ecosystem] {
				db.keys[k.ecosystem] = true
				db.bases[Base(k.ecosystem)] = true
				covered = db.covered(w)
			}
		}
	}
	if w.build && len(db.Rejected) == rejected {
		writeCacheFile(indexPath(cacheDir, a.sum), newArchiveIndex(records, peeks).encode())
	}
	return nil
}

// peek is what loadLazy learns of a record before indexing it.
type peek struct {
	size     int
	modified time.Time
	// header is the decoded header of a record that concerns the want, or whose modified
	// time could not be read without decoding it.
	header *header
	err    error
}

// peek decompresses the record into buf (reused) with fr and reads what loadLazy needs.
func (r *lazyRecord) peek(fr io.ReadCloser, buf []byte, w *want) ([]byte, peek) {
	var p peek
	buf, p.err = r.inflate(fr, buf)
	if p.err != nil {
		return buf, p
	}
	p.size = len(buf)
	if !w.build && !w.concerns(buf) {
		var ok bool
		if p.modified, ok = topLevelTime(buf, "modified"); ok {
			return buf, p
		}
	}
	p.header, p.err = decodeHeader(buf)
	if p.err == nil {
		p.modified = p.header.Modified
	}
	return buf, p
}

// header decompresses the record again and decodes its header.
func (r *lazyRecord) header() (*header, error) {
	fr := flate.NewReader(nil)
	defer fr.Close()
	buf, err := r.inflate(fr, nil)
	if err != nil {
		return nil, err
	}
	return decodeHeader(buf)
}

func decodeHeader(rec []byte) (*header, error) {
	var h header
	if err := json.Unmarshal(rec, &h); err != nil {
		return nil, fmt.Errorf("%w: %v", osv.ErrInvalidRecord, err)
	}
	return &h, nil
}

// records reads the archive, checks that it is the one Open hashed, and returns its records.
func (a *lazyArchive) records() ([]*lazyRecord, error) {
	data, err := os.ReadFile(a.path)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != a.sum {
		return nil, errors.New("the archive changed since the database was opened")
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	out := make([]*lazyRecord, 0, len(zr.File))
	for _, zf := range zr.File {
		if zf.FileInfo().IsDir() {
			continue
		}
		lr, err := newLazyRecord(a.ecosystem, zf, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", zf.Name, err)
		}
		out = append(out, lr)
	}
	return out, nil
}

// newLazyRecord returns the record of zf, whose compressed bytes lie in data (the whole zip).
func newLazyRecord(archive string, zf *zip.File, data []byte) (*lazyRecord, error) {
	if zf.UncompressedSize64 > osv.MaxRecordBytes {
		return nil, fmt.Errorf("%w: record of %d bytes", ErrTooLarge, zf.UncompressedSize64)
	}
	if zf.Method != zip.Store && zf.Method != zip.Deflate {
		return nil, zip.ErrAlgorithm
	}
	off, err := zf.DataOffset()
	if err != nil {
		return nil, err
	}
	if off < 0 || zf.CompressedSize64 > uint64(len(data)) || off > int64(len(data))-int64(zf.CompressedSize64) {
		return nil, zip.ErrFormat
	}
	return &lazyRecord{
		archive: archive, file: zf.Name, method: zf.Method, off: off,
		raw: data[off : off+int64(zf.CompressedSize64)], crc: zf.CRC32, size: int(zf.UncompressedSize64),
	}, nil
}

// inflate decompresses the record into buf (reused) with fr and checks its size and CRC.
func (r *lazyRecord) inflate(fr io.ReadCloser, buf []byte) ([]byte, error) {
	buf = buf[:0]
	if r.method == zip.Store {
		buf = append(buf, r.raw...)
	} else {
		if err := fr.(flate.Resetter).Reset(bytes.NewReader(r.raw), nil); err != nil {
			return nil, err
		}
		// The size in the zip header may lie; read at most one byte past the limit.
		var err error
		buf, err = readAllInto(buf, io.LimitReader(fr, osv.MaxRecordBytes+1))
		if err != nil {
			return nil, err
		}
	}
	if len(buf) > osv.MaxRecordBytes {
		return nil, fmt.Errorf("%w: record over %d bytes", ErrTooLarge, osv.MaxRecordBytes)
	}
	if len(buf) != r.size || crc32.ChecksumIEEE(buf) != r.crc {
		return nil, zip.ErrChecksum
	}
	return buf, nil
}

// readAllInto appends all of rd to buf.
func readAllInto(buf []byte, rd io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// decode decompresses and parses the record, once.
func (r *lazyRecord) decode() (*osv.Record, error) {
	r.once.Do(func() {
		fr := flate.NewReader(nil)
		defer fr.Close()
		var data []byte
		data, r.err = r.inflate(fr, nil)
		if r.err == nil {
			r.rec, r.err = osv.Parse(data)
		}
		r.raw = nil
	})
	return r.rec, r.err
}

// lookup appends to out the entries of the opened records filed under k; records that do not
// decode are left out.
func (l *lazyIndex) lookup(k key, out []Entry) []Entry {
	for _, le := range l.entries[k] {
		rec, err := le.rec.decode()
		if err != nil || le.i >= len(rec.Affected) {
			continue
		}
		out = append(out, Entry{Record: rec, Affected: &rec.Affected[le.i]})
	}
	return out
}

// topLevelTime returns the RFC 3339 time of the member name of the JSON object rec, without
// decoding the rest. It reports false when it cannot tell for sure: rec is not an object it
// can walk, the member is missing, or the member's name or value holds an escape.
func topLevelTime(rec []byte, name string) (time.Time, bool) {
	depth, i := 0, 0
	for i < len(rec) {
		switch c := rec[i]; c {
		case '{', '[':
			depth++
			i++
		case '}', ']':
			depth--
			i++
		case '"':
			end, escaped, ok := stringEnd(rec, i)
			if !ok {
				return time.Time{}, false
			}
			j := skipSpace(rec, end)
			isKey := j < len(rec) && rec[j] == ':'
			if depth == 1 && isKey && (escaped || string(rec[i+1:end-1]) == name) {
				if escaped {
					return time.Time{}, false
				}
				k := skipSpace(rec, j+1)
				if k >= len(rec) || rec[k] != '"' {
					return time.Time{}, false
				}
				vend, vesc, ok := stringEnd(rec, k)
				if !ok || vesc {
					return time.Time{}, false
				}
				t, err := time.Parse(time.RFC3339, string(rec[k+1:vend-1]))
				return t, err == nil
			}
			i = end
		default:
			i++
		}
	}
	return time.Time{}, false
}

// stringEnd returns the index just past the JSON string starting at rec[i] (a quote), and
// whether it holds an escape.
func stringEnd(rec []byte, i int) (int, bool, bool) {
	escaped := false
	for j := i + 1; j < len(rec); {
		k := bytes.IndexByte(rec[j:], '"')
		if k < 0 {
			break
		}
		b := bytes.IndexByte(rec[j:j+k], '\\')
		if b < 0 {
			return j + k + 1, escaped, true
		}
		escaped = true
		j += b + 2 // past the escaped character
	}
	return 0, false, false
}

func skipSpace(rec []byte, i int) int {
	for i < len(rec) && (rec[i] == ' ' || rec[i] == '\t' || rec[i] == '\n' || rec[i] == '\r') {
		i++
	}
	return i
}
