package inventory

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// The rpm databases are read here rather than with github.com/erikvarga/go-rpmdb (what
// osv-scalibr's rpm extractor uses): that library reads Berkeley DB and ndb files in
// goroutines of its own, where an item offset pointing past its page (two bytes changed in
// a Packages file) panics out of reach of any recover and takes the process down; it
// allocates what a header's index count claims (up to 32 GiB) before checking it, follows
// overflow chains without noticing loops, and its sqlite reader needs an SQL engine
// (modernc.org/sqlite, some 8 MB of binary) that runs the schema of the image's database.
// The readers here check every offset, read each page at most once, and never return more
// header bytes than the file holds.

// isRpmDB reports whether dir/base is one of rpm's database files in one of the
// directories rpm keeps them in.
func isRpmDB(dir, base string) bool {
	switch dir {
	case "var/lib/rpm", "usr/lib/sysimage/rpm", "usr/share/rpm":
	default:
		return false
	}
	switch base {
	case "rpmdb.sqlite", "Packages", "Packages.db":
		return true
	}
	return false
}

// rpmBlobs calls fn with each package header blob of an rpm database. The caller bounds
// the total.
type rpmBlobs func(ctx context.Context, r io.ReaderAt, size, maxHeader int64, fn func([]byte) error) error

// ParseRpmDB reads an rpm package database, whichever of rpm's three formats it is in:
// sqlite (rpmdb.sqlite, rpm 4.16 and later: RHEL 9, Fedora), Berkeley DB (Packages: RHEL 7
// and 8, CentOS) or ndb (Packages.db: SUSE). It returns the installed packages sorted by
// name and version: Version is "[epoch:]version-release" with the epoch only when it is
// above zero; SourceName and SourceVersion come from the source rpm's file name ("openssl"
// and "3.0.7-27.el9" for openssl-3.0.7-27.el9.src.rpm), the package's own when it has none
// (gpg-pubkey). Ecosystem is left empty: it is the image's distribution, which Merge sets.
//
// A file that is none of the formats, or whose pages, records or headers do not hold
// together, fails with ErrMalformed; a header over maxHeader bytes, or more than
// maxRpmPackages headers, fails with ErrLimit; a cancelled ctx returns its error. An empty
// file is an empty database. Only the file's main database is read: the sqlite write-ahead
// log (rpmdb.sqlite-wal), empty once rpm has closed the database, is not.
func ParseRpmDB(ctx context.Context, r io.ReaderAt, size, maxHeader int64) ([]Package, error) {
	if size == 0 {
		return nil, nil
	}
	blobs, err := rpmDBFormat(r, size)
	if err != nil {
		return nil, err
	}
	var pkgs []Package
	left := size
	err = blobs(ctx, r, size, maxHeader, func(blob []byte) error {
		// Small headers come by the hundred thousand from a page or slot page.
		if len(pkgs)%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if len(pkgs) >= maxRpmPackages {
			return fmt.Errorf("%w: rpm database holds more than %d packages", ErrLimit, maxRpmPackages)
		}
		// In any of the formats the headers are stored once each; more header bytes than
		// the file holds means records that share their data.
		if left -= int64(len(blob)); left < 0 {
			return fmt.Errorf("%w: rpm headers add up to more than the file", ErrMalformed)
		}
		h, err := parseRpmHeader(blob)
		if err != nil {
			return err
		}
		pkgs = append(pkgs, h.pkg())
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(pkgs, func(a, b Package) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Version, b.Version), strings.Compare(a.SourceName, b.SourceName))
	})
	// Multilib packages (glibc for x86_64 and i686) are one name and version twice.
	return slices.Compact(pkgs), nil
}

// maxRpmPackages caps the headers read from one rpm database: a few thousand in the
// largest installations, while a 512 MiB database of minimal headers would hold millions,
// each a Package of some 200 bytes. rpm databases are read from nine paths (three names in
// three directories).
const maxRpmPackages = 100_000

// rpmDBFormat tells the formats apart by their magic numbers.
func rpmDBFormat(r io.ReaderAt, size int64) (rpmBlobs, error) {
	head := make([]byte, min(size, 512))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read rpm database: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, []byte(sqliteMagic)):
		return sqliteRpmBlobs, nil
	case len(head) >= 4 && binary.LittleEndian.Uint32(head) == ndbMagic:
		return ndbRpmBlobs, nil
	case len(head) >= 16 && (binary.LittleEndian.Uint32(head[12:]) == bdbHashMagic || binary.BigEndian.Uint32(head[12:]) == bdbHashMagic):
		return bdbRpmBlobs, nil
	}
	return nil, fmt.Errorf("%w: not an rpm database (sqlite, Berkeley DB or ndb)", ErrMalformed)
}

// Header tags and types (rpm's lib/rpmtag.h).
const (
	rpmTagName      = 1000
	rpmTagVersion   = 1001
	rpmTagRelease   = 1002
	rpmTagEpoch     = 1003
	rpmTagSourceRPM = 1044

	rpmTypeInt32       = 4
	rpmTypeString      = 6
	rpmTypeStringArray = 8
	rpmTypeI18NString  = 9

	// rpmMaxString bounds the strings read from a header (name, version, release, source
	// rpm), terminator excluded; the longest in Fedora and RHEL are under 100 bytes.
	rpmMaxString = 4096
)

// rpmHeader holds the tags of a package header that identify the package.
type rpmHeader struct {
	name, version, release, sourceRPM string
	epoch                             uint32
}

// parseRpmHeader reads the identifying tags of an rpm header as rpm stores it in its
// database: a 4-byte index length il, a 4-byte data length dl (both big-endian), il index
// entries of 16 bytes (tag, type, offset into the data, count) and dl bytes of data. Index
// entries of other tags, region tags included, are skipped. The tags read must appear once
// each and their strings be at most rpmMaxString bytes, so that the work is linear in the
// blob's size. Errors wrap ErrMalformed.
func parseRpmHeader(blob []byte) (rpmHeader, error) {
	var h rpmHeader
	var seen uint8 // a bit for each tag read
	fail := func(format string, args ...any) (rpmHeader, error) {
		return rpmHeader{}, fmt.Errorf("%w: rpm header: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(blob) < 8 {
		return fail("%d bytes", len(blob))
	}
	il, dl := uint64(binary.BigEndian.Uint32(blob)), uint64(binary.BigEndian.Uint32(blob[4:]))
	if il == 0 || il > uint64(len(blob)-8)/16 || dl > uint64(len(blob))-8-16*il {
		return fail("%d index entries and %d data bytes do not fit in %d bytes", il, dl, len(blob))
	}
	index := blob[8 : 8+16*il]
	data := blob[8+16*il : 8+16*il+dl]
	for e := index; len(e) >= 16; e = e[16:] {
		tag, typ := binary.BigEndian.Uint32(e), binary.BigEndian.Uint32(e[4:])
		off, count := uint64(binary.BigEndian.Uint32(e[8:])), binary.BigEndian.Uint32(e[12:])
		var bit uint8
		var dst *string
		switch tag {
		case rpmTagName:
			bit, dst = 1<<0, &h.name
		case rpmTagVersion:
			bit, dst = 1<<1, &h.version
		case rpmTagRelease:
			bit, dst = 1<<2, &h.release
		case rpmTagSourceRPM:
			bit, dst = 1<<3, &h.sourceRPM
		case rpmTagEpoch:
			bit = 1 << 4
		default:
			continue
		}
		// Entries of one tag naming one long string would cost entries × length.
		if seen&bit != 0 {
			return fail("tag %d twice", tag)
		}
		seen |= bit
		if tag == rpmTagEpoch {
			if typ != rpmTypeInt32 || count == 0 || off+4 > dl {
				return fail("bad epoch entry")
			}
			h.epoch = binary.BigEndian.Uint32(data[off:])
			continue
		}
		if typ != rpmTypeString && typ != rpmTypeStringArray && typ != rpmTypeI18NString || count == 0 || off >= dl {
			return fail("bad entry for tag %d", tag)
		}
		s := data[off:min(dl, off+rpmMaxString+1)]
		end := bytes.IndexByte(s, 0)
		if end < 0 {
			return fail("string for tag %d unterminated within %d bytes", tag, len(s))
		}
		*dst = string(s[:end])
	}
	if h.name == "" || h.version == "" || h.release == "" {
		return fail("no name, version or release")
	}
	return h, nil
}

// pkg turns the header into a Package.
func (h rpmHeader) pkg() Package {
	vr := h.version + "-" + h.release
	version := vr
	if h.epoch > 0 {
		version = strconv.FormatUint(uint64(h.epoch), 10) + ":" + vr
	}
	srcName, srcVersion, ok := splitSourceRPM(h.sourceRPM)
	if !ok {
		srcName, srcVersion = h.name, vr
	}
	return Package{Name: h.name, Version: version, SourceName: srcName, SourceVersion: srcVersion, Type: TypeRpm}
}

// splitSourceRPM splits "name-version-release.src.rpm" into the name and "version-release".
func splitSourceRPM(file string) (name, vr string, ok bool) {
	base, ok := strings.CutSuffix(file, ".src.rpm")
	if !ok {
		if base, ok = strings.CutSuffix(file, ".nosrc.rpm"); !ok {
			return "", "", false
		}
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 {
		return "", "", false
	}
	j := strings.LastIndexByte(base[:i], '-')
	if j <= 0 || j+1 == i || i+1 == len(base) {
		return "", "", false
	}
	return base[:j], base[j+1:], true
}

// pageSet records which pages of a database have been read, so that no page is read twice:
// a cycle of page links, or two records sharing pages, is malformed.
type pageSet []uint64

func newPageSet(pages uint64) pageSet { return make(pageSet, pages/64+1) }

// add marks page n and reports whether it was new.
func (s pageSet) add(n uint64) bool {
	w, b := n/64, uint64(1)<<(n%64)
	if s[w]&b != 0 {
		return false
	}
	s[w] |= b
	return true
}

// readPage reads n bytes at off, failing with ErrMalformed when the file is shorter.
func readPage(r io.ReaderAt, off int64, n int, what string) ([]byte, error) {
	buf := make([]byte, n)
	if got, err := r.ReadAt(buf, off); got < n {
		if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%w: %s at offset %d is past the end of the file", ErrMalformed, what, off)
		}
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return buf, nil
}
