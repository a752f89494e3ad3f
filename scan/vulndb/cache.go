package vulndb

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/scan/osv"
)

// The cache of an opened bundle (Options.CacheDir) keeps what Open and Need learn of each
// archive so that the next scan need not learn it again:
//
//	CacheDir/vulndb/
//	├── <sha256 of the archive's absolute path>.sum   the file's identity (size, times,
//	│                                                  inode) when hashed, its sha256 and
//	│                                                  record count
//	└── <sha256 of the archive>.index                 every record's place in the zip and
//	                                                   the packages it is filed under
//
// A .sum is used only while the file's identity is unchanged: rewriting an archive changes
// its modification or change time, and it is hashed again. An .index is named by the
// archive's contents and holds only what those contents determine, so it is never stale;
// it is written only for an archive all of whose records were read without an error, and
// records read through it are still checked against their CRC. Files that cannot be read
// or written are ignored: the archive is then read as without a cache.

const (
	sumHeader   = "portcullis vulndb sum 1"
	indexHeader = "portcullis vulndb index 1"
)

// fileID identifies a file's contents without reading them.
type fileID struct{ size, mtime, ctime, ino, dev int64 }

func statID(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	sysID(fi, &id)
	return id
}

func (id fileID) String() string {
	return fmt.Sprintf("%d %d %d %d %d", id.size, id.mtime, id.ctime, id.ino, id.dev)
}

func sumPath(cacheDir, archive string) string {
	abs, err := filepath.Abs(archive)
	if err != nil {
		abs = archive
	}
	h := sha256.Sum256([]byte(abs))
	return filepath.Join(cacheDir, "vulndb", hex.EncodeToString(h[:])+".sum")
}

func indexPath(cacheDir, sum string) string {
	return filepath.Join(cacheDir, "vulndb", sum+".index")
}

// cachedSum returns the sha256 and record count cached for the archive at path, if the file
// is still the one they were computed for.
func cachedSum(cacheDir, path string, id fileID) (sum string, n int, ok bool) {
	data, err := os.ReadFile(sumPath(cacheDir, path))
	if err != nil {
		return "", 0, false
	}
	head, rest, _ := strings.Cut(string(data), "\n")
	idLine, rest, _ := strings.Cut(rest, "\n")
	sum, count, _ := strings.Cut(strings.TrimSuffix(rest, "\n"), " ")
	n, err = strconv.Atoi(count)
	if head != sumHeader || idLine != id.String() || len(sum) != 64 || err != nil || n < 0 {
		return "", 0, false
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return "", 0, false
	}
	return sum, n, true
}

func writeSum(cacheDir, path string, id fileID, sum string, n int) {
	writeCacheFile(sumPath(cacheDir, path), fmt.Appendf(nil, "%s\n%s\n%s %d\n", sumHeader, id, sum, n))
}

// writeCacheFile replaces p with data, or leaves it as it was.
func writeCacheFile(p string, data []byte) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

// archiveIndex is an archive's .index: its total uncompressed size, its latest modified
// time, and each record filed under at least one package (withdrawn records are left out).
type archiveIndex struct {
	bytes    int64
	modified time.Time
	records  []indexedRecord
}

type indexedRecord struct {
	file       string
	method     uint16
	off, csize int64
	size       int
	crc        uint32
	affected   []indexedAffected
	lazy       *lazyRecord // set once the record is needed
}

// indexedAffected is the i-th affected entry of a record and the key it is filed under
// (IndexEcosystem and NormalizeName of its package: change indexHeader's version when
// either changes).
type indexedAffected struct {
	i int
	k key
}

// encode writes the index as lines:
//
//	portcullis vulndb index 1
//	<total uncompressed bytes> <latest modified, RFC 3339>
//	r <method> <offset> <compressed size> <size> <crc> <quoted file name>
//	a <affected index> <quoted key ecosystem> <quoted key name>   (one per entry, after its record)
func (x *archiveIndex) encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n%d %s\n", indexHeader, x.bytes, x.modified.Format(time.RFC3339Nano))
	for _, r := range x.records {
		fmt.Fprintf(&b, "r %d %d %d %d %d %s\n", r.method, r.off, r.csize, r.size, r.crc, strconv.Quote(r.file))
		for _, a := range r.affected {
			fmt.Fprintf(&b, "a %d %s %s\n", a.i, strconv.Quote(a.k.ecosystem), strconv.Quote(a.k.name))
		}
	}
	return b.Bytes()
}

var errBadIndex = errors.New("malformed index")

// readIndex reads the .index of the archive whose sha256 is sum; it reports false when there
// is none or it does not parse.
func readIndex(cacheDir, sum string) (*archiveIndex, bool) {
	data, err := os.ReadFile(indexPath(cacheDir, sum))
	if err != nil {
		return nil, false
	}
	x, err := decodeIndex(data)
	return x, err == nil
}

func decodeIndex(data []byte) (*archiveIndex, error) {
	rest := string(data) // one copy; the fields below are substrings of it
	line := func() (string, bool) {
		l, r, ok := strings.Cut(rest, "\n")
		rest = r
		return l, ok
	}
	head, ok1 := line()
	info, ok2 := line()
	if !ok1 || !ok2 || head != indexHeader {
		return nil, errBadIndex
	}
	x := &archiveIndex{records: make([]indexedRecord, 0, strings.Count(rest, "\nr ")+1)}
	total, modified, _ := strings.Cut(info, " ")
	var err error
	if x.bytes, err = strconv.ParseInt(total, 10, 64); err != nil {
		return nil, errBadIndex
	}
	if x.modified, err = time.Parse(time.RFC3339Nano, modified); err != nil {
		return nil, errBadIndex
	}
	for rest != "" {
		l, ok := line()
		if !ok {
			return nil, errBadIndex // the last line ends with a newline too
		}
		kind, l, _ := strings.Cut(l, " ")
		switch kind {
		case "r":
			var f [5]uint64
			for i := range f {
				var v string
				v, l, _ = strings.Cut(l, " ")
				if f[i], err = strconv.ParseUint(v, 10, 63); err != nil {
					return nil, errBadIndex
				}
			}
			file, err := strconv.Unquote(l)
			if err != nil || f[0] > 0xffff || f[3] > 1<<31 || f[4] > 0xffffffff {
				return nil, errBadIndex
			}
			x.records = append(x.records, indexedRecord{
				method: uint16(f[0]), off: int64(f[1]), csize: int64(f[2]), size: int(f[3]), crc: uint32(f[4]), file: file,
			})
		case "a":
			if len(x.records) == 0 {
				return nil, errBadIndex
			}
			i, l, _ := strings.Cut(l, " ")
			n, err := strconv.Atoi(i)
			if err != nil || n < 0 {
				return nil, errBadIndex
			}
			eco, err := strconv.QuotedPrefix(l)
			if err != nil || len(l) < len(eco)+1 || l[len(eco)] != ' ' {
				return nil, errBadIndex
			}
			a := indexedAffected{i: n}
			if a.k.ecosystem, err = strconv.Unquote(eco); err != nil {
				return nil, errBadIndex
			}
			if a.k.name, err = strconv.Unquote(l[len(eco)+1:]); err != nil {
				return nil, errBadIndex
			}
			r := &x.records[len(x.records)-1]
			r.affected = append(r.affected, a)
		default:
			return nil, errBadIndex
		}
	}
	return x, nil
}

// newArchiveIndex returns the index of an archive's records, whose headers peeks hold.
func newArchiveIndex(records []*lazyRecord, peeks []peek) *archiveIndex {
	x := &archiveIndex{}
	for i, lr := range records {
		p := &peeks[i]
		x.bytes += int64(p.size)
		if p.modified.After(x.modified) {
			x.modified = p.modified
		}
		if p.header == nil || p.header.Withdrawn != nil {
			continue
		}
		r := indexedRecord{file: lr.file, method: lr.method, off: lr.off, csize: int64(len(lr.raw)), size: lr.size, crc: lr.crc}
		for i, af := range p.header.Affected {
			if af.Package.Name != "" {
				r.affected = append(r.affected, indexedAffected{i, key{IndexEcosystem(af.Package.Ecosystem), NormalizeName(af.Package.Ecosystem, af.Package.Name)}})
			}
		}
		if len(r.affected) > 0 {
			x.records = append(x.records, r)
		}
	}
	return x
}

// loadIndexed is loadLazy for an archive whose index was read from the cache: only the
// records filed under w's keys are read from the archive, each decoded when looked up.
func (db *DB) loadIndexed(a *lazyArchive, w *want) error {
	x := a.index
	if !a.loaded {
		db.lazy.budget -= x.bytes
		if db.lazy.budget < 0 {
			return fmt.Errorf("%w: total uncompressed size", ErrTooLarge)
		}
		if x.modified.After(db.Modified) {
			db.Modified = x.modified
		}
		for _, r := range x.records {
			for _, af := range r.affected {
				if !db.keys[af.k.ecosystem] {
					db.keys[af.k.ecosystem] = true
					db.bases[Base(af.k.ecosystem)] = true
				}
			}
		}
		a.loaded = true
	}
	var need []*indexedRecord
	for i := range x.records {
		r := &x.records[i]
		if r.lazy != nil {
			continue
		}
		for _, af := range r.affected {
			if w.keys[af.k] {
				need = append(need, r)
				break
			}
		}
	}
	if len(need) == 0 {
		return nil
	}
	f, err := os.Open(a.path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if statID(fi) != a.id {
		return errors.New("the archive changed since the database was opened")
	}
	for _, r := range need {
		if r.size > osv.MaxRecordBytes || r.csize > fi.Size() {
			return fmt.Errorf("%s: %w", r.file, errBadIndex)
		}
		raw := make([]byte, r.csize)
		if _, err := f.ReadAt(raw, r.off); err != nil {
			return fmt.Errorf("%s: %w", r.file, err)
		}
		r.lazy = &lazyRecord{archive: a.ecosystem, file: r.file, method: r.method, off: r.off, raw: raw, crc: r.crc, size: r.size}
		for _, af := range r.affected {
			db.lazy.entries[af.k] = append(db.lazy.entries[af.k], lazyEntry{rec: r.lazy, i: af.i})
		}
	}
	return nil
}
