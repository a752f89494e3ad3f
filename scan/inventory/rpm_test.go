package inventory

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rpmFixture reads one of the databases testdata/rpm/make.sh made; all four hold the same
// twelve packages.
func rpmFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/rpm/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var rpmFixtures = []string{"rpmdb.sqlite", "rpmdb-512.sqlite", "Packages", "Packages.db"}

func rpmFixturePackages(location string) []Package {
	p := func(name, version, src, srcVersion string) Package {
		return Package{Name: name, Version: version, SourceName: src, SourceVersion: srcVersion, Type: TypeRpm, Location: location}
	}
	return []Package{
		p("bash", "5.1.8-6.el9", "bash", "5.1.8-6.el9"),
		p("glibc", "2.34-60.el9", "glibc", "2.34-60.el9"),
		p("glibc-common", "2.34-60.el9", "glibc", "2.34-60.el9"),
		p("glibc-minimal-langpack", "2.34-60.el9", "glibc", "2.34-60.el9"),
		p("ncurses-base", "6.2-8.20210508.el9", "ncurses", "6.2-8.20210508.el9"),
		p("ncurses-libs", "6.2-8.20210508.el9", "ncurses", "6.2-8.20210508.el9"),
		p("openssl", "1:3.0.7-27.el9", "openssl", "3.0.7-27.el9"),
		p("openssl-libs", "1:3.0.7-27.el9", "openssl", "3.0.7-27.el9"),
		p("perl-Carp", "1.50-481.el9", "perl", "5.32.1-481.el9"),
		p("rocky-release", "9.2-1.6.el9", "rocky-release", "9.2-1.6.el9"),
		p("rocky-repos", "9.2-1.6.el9", "rocky-release", "9.2-1.6.el9"),
		p("tzdata", "2023c-1.el9", "tzdata", "2023c-1.el9"),
	}
}

func TestParseRpmDB(t *testing.T) {
	t.Parallel()
	for _, name := range rpmFixtures {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := rpmFixture(t, name)
			got, err := ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(rpmFixturePackages(""), got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if got, err := ParseRpmDB(t.Context(), bytes.NewReader(nil), 0, 1<<20); got != nil || err != nil {
		t.Errorf("empty file: %v, %v; want nothing", got, err)
	}
}

// corrupt returns a copy of b with fn applied.
func corrupt(b []byte, fn func(b []byte)) []byte {
	c := bytes.Clone(b)
	fn(c)
	return c
}

// bdbPages calls fn with the number and bytes of each page of the Berkeley DB fixture of
// the given page type.
func bdbPages(b []byte, typ byte, fn func(n int, p []byte) bool) {
	size := int(binary.LittleEndian.Uint32(b[20:]))
	for n := 1; (n+1)*size <= len(b); n++ {
		if p := b[n*size : (n+1)*size]; p[25] == typ && !fn(n, p) {
			return
		}
	}
}

func TestParseRpmDBMalformed(t *testing.T) {
	t.Parallel()
	sqlite, small, bdb, ndb := rpmFixture(t, "rpmdb.sqlite"), rpmFixture(t, "rpmdb-512.sqlite"), rpmFixture(t, "Packages"), rpmFixture(t, "Packages.db")
	tests := []struct {
		name string
		b    []byte
	}{
		{"not a database", []byte("these are not the packages you are looking for")},
		{"sqlite header only", []byte(sqliteMagic + "\x10\x00")},
		{"sqlite truncated", sqlite[:3*4096]},
		{"sqlite zero page size", corrupt(sqlite, func(b []byte) { b[16], b[17] = 0, 0 })},
		{"sqlite interior page linking itself", corrupt(small, func(b []byte) {
			// Page 2, the root of the Packages table, is an interior page; point its
			// rightmost child back at it.
			binary.BigEndian.PutUint32(b[512+8:], 2)
		})},
		{"sqlite cell pointer past the page", corrupt(small, func(b []byte) { binary.BigEndian.PutUint16(b[512+12:], 0xfff0) })},
		{"sqlite no Packages table", corrupt(small, func(b []byte) {
			i := bytes.Index(b, []byte("tablePackagesPackages"))
			copy(b[i+5:], "Pickages")
		})},
		{"bdb item offset past the page", corrupt(bdb, func(b []byte) {
			// The corruption that makes go-rpmdb panic in a goroutine of its own.
			bdbPages(b, bdbHashPage, func(_ int, p []byte) bool {
				binary.LittleEndian.PutUint16(p[bdbPageHeader+2:], 0xfff0)
				return false
			})
		})},
		{"bdb overflow chain looping", corrupt(bdb, func(b []byte) {
			bdbPages(b, bdbOverflow, func(n int, p []byte) bool {
				if binary.LittleEndian.Uint32(p[16:]) == 0 {
					return true
				}
				binary.LittleEndian.PutUint32(p[16:], uint32(n))
				return false
			})
		})},
		{"bdb overflow length beyond the page", corrupt(bdb, func(b []byte) {
			bdbPages(b, bdbOverflow, func(_ int, p []byte) bool {
				binary.LittleEndian.PutUint16(p[22:], 0xffff)
				return false
			})
		})},
		{"bdb truncated", bdb[:len(bdb)/2]},
		{"ndb bad slot", corrupt(ndb, func(b []byte) { b[2*ndbSlotSize] = 'X' })},
		{"ndb blob past the end", corrupt(ndb, func(b []byte) { binary.LittleEndian.PutUint32(b[2*ndbSlotSize+8:], 1<<30) })},
		{"ndb slots sharing a blob", corrupt(ndb, func(b []byte) {
			// Every used slot names the first blob: more header bytes than the file holds.
			first := b[2*ndbSlotSize : 3*ndbSlotSize]
			for s := 3; binary.LittleEndian.Uint32(b[s*ndbSlotSize+4:]) != 0; s++ {
				copy(b[s*ndbSlotSize:], first)
			}
			for s := 3; s < ndbSlotPage/ndbSlotSize; s++ {
				copy(b[s*ndbSlotSize:], first)
			}
		})},
		{"ndb header with a huge index count", corrupt(ndb, func(b []byte) {
			off := int(binary.LittleEndian.Uint32(b[2*ndbSlotSize+8:])) * ndbBlockSize
			binary.BigEndian.PutUint32(b[off+16:], 0x7fffffff)
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRpmDB(t.Context(), bytes.NewReader(tt.b), int64(len(tt.b)), 1<<20)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("got %d packages, err %v; want ErrMalformed", len(got), err)
			}
		})
	}
	for _, name := range rpmFixtures {
		b := rpmFixture(t, name)
		if _, err := ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 512); !errors.Is(err, ErrLimit) {
			t.Errorf("%s: headers over the limit: err %v, want ErrLimit", name, err)
		}
	}
}

func TestParseRpmHeader(t *testing.T) {
	t.Parallel()
	hdr := rpmHeaderBytes
	good := hdr([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 2, 1}, {rpmTagRelease, rpmTypeString, 4, 1}, {rpmTagEpoch, rpmTypeInt32, 8, 1}}, "a\x001\x002\x00\x00\x00\x00\x00\x00\x07")
	h, err := parseRpmHeader(good)
	if err != nil || h != (rpmHeader{name: "a", version: "1", release: "2", epoch: 7}) {
		t.Errorf("good header: %+v, %v", h, err)
	}
	for name, b := range map[string][]byte{
		"short":              {0, 0, 0, 1},
		"no entries":         hdr(nil, ""),
		"huge index count":   append([]byte{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0}, make([]byte, 64)...),
		"huge data length":   append([]byte{0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff}, make([]byte, 64)...),
		"no release":         hdr([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 2, 1}}, "a\x001\x00"),
		"unterminated":       hdr([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}}, "abc"),
		"offset past data":   hdr([][4]uint32{{rpmTagName, rpmTypeString, 9, 1}}, "a\x00"),
		"epoch past data":    hdr([][4]uint32{{rpmTagEpoch, rpmTypeInt32, 2, 1}}, "\x00\x00\x00"),
		"name of wrong type": hdr([][4]uint32{{rpmTagName, rpmTypeInt32, 0, 1}}, "a\x00"),
		"name twice":         hdr([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 0, 1}, {rpmTagRelease, rpmTypeString, 0, 1}, {rpmTagName, rpmTypeString, 0, 1}}, "a\x00"),
		"epoch twice":        hdr([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 0, 1}, {rpmTagRelease, rpmTypeString, 0, 1}, {rpmTagEpoch, rpmTypeInt32, 0, 1}, {rpmTagEpoch, rpmTypeInt32, 0, 1}}, "a\x00\x00\x00"),
		"name too long":      hdr([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 0, 1}, {rpmTagRelease, rpmTypeString, 0, 1}}, strings.Repeat("a", rpmMaxString+1)+"\x00"),
	} {
		if _, err := parseRpmHeader(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

// rpmHeaderBytes builds a header from index entries (tag, type, offset, count) and data.
func rpmHeaderBytes(entries [][4]uint32, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(entries)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	for _, e := range entries {
		for _, v := range e {
			b = binary.BigEndian.AppendUint32(b, v)
		}
	}
	return append(b, data...)
}

// minimalRpmHeader is package a, version 1-1: version and release name one string.
var minimalRpmHeader = rpmHeaderBytes([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 2, 1}, {rpmTagRelease, rpmTypeString, 2, 1}}, "a\x001\x00")

// allocated returns how many bytes fn allocates. Tests that call it do not call t.Parallel:
// the package's parallel tests start only once the sequential ones are done, so nothing
// else allocates meanwhile.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestParseRpmHeaderLinear(t *testing.T) {
	// Not parallel: allocated measures the whole process.
	// One 64 KiB string named by 4,096 entries of one tag: copying it for each entry
	// allocated 256 MiB.
	long := strings.Repeat("x", 64<<10) + "\x00"
	entries := make([][4]uint32, 4096)
	for i := range entries {
		entries[i] = [4]uint32{rpmTagName, rpmTypeString, 0, 1}
	}
	// A name over rpmMaxString: its copy was as long as the header.
	huge := rpmHeaderBytes([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 0, 1}, {rpmTagRelease, rpmTypeString, 0, 1}}, strings.Repeat("x", 4<<20)+"\x00")
	for name, b := range map[string][]byte{
		"one tag many times": rpmHeaderBytes(entries, long),
		"long string":        huge,
	} {
		var err error
		n := allocated(func() { _, err = parseRpmHeader(b) })
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
		if n > 64<<10 {
			t.Errorf("%s: a header of %d bytes allocated %d bytes", name, len(b), n)
		}
	}
	// The longest string allowed.
	ok := rpmHeaderBytes([][4]uint32{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 0, 1}, {rpmTagRelease, rpmTypeString, 0, 1}}, strings.Repeat("x", rpmMaxString)+"\x00")
	if h, err := parseRpmHeader(ok); err != nil || len(h.name) != rpmMaxString {
		t.Errorf("name of %d bytes: %d bytes, %v", rpmMaxString, len(h.name), err)
	}
}

// sqliteAppendVarint appends v (under 2^56) as an SQLite varint.
func sqliteAppendVarint(b []byte, v uint64) []byte {
	n := 1
	for v>>(7*n) != 0 {
		n++
	}
	for i := n - 1; i >= 0; i-- {
		c := byte(v>>(7*i)) & 0x7f
		if i > 0 {
			c |= 0x80
		}
		b = append(b, c)
	}
	return b
}

// sqliteRecord builds a record from serial types and the columns' bytes.
func sqliteRecord(types []uint64, body []byte) []byte {
	var ts []byte
	for _, t := range types {
		ts = sqliteAppendVarint(ts, t)
	}
	n := 1
	for len(sqliteAppendVarint(nil, uint64(len(ts)+n))) != n {
		n++
	}
	rec := sqliteAppendVarint(nil, uint64(len(ts)+n))
	return append(append(rec, ts...), body...)
}

// sqliteText is the serial type of a text column of n bytes.
func sqliteText(n int) uint64 { return uint64(13 + 2*n) }

// sqliteSchemaRow is the schema table's row for rpm's Packages table at page root.
func sqliteSchemaRow(root byte, nulls int) []byte {
	const sql = "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"
	types := []uint64{sqliteText(5), sqliteText(8), sqliteText(8), 1, sqliteText(len(sql))}
	types = append(types, make([]uint64, nulls)...)
	return sqliteRecord(types, []byte("tablePackagesPackages"+string(root)+sql))
}

// sqlitePackagesRow is a row of rpm's Packages table holding header, then nulls NULL
// columns and a text column of pad bytes.
func sqlitePackagesRow(header []byte, nulls, pad int) []byte {
	types := append([]uint64{1, uint64(12 + 2*len(header))}, make([]uint64, nulls)...)
	types = append(types, sqliteText(pad))
	return sqliteRecord(types, append(append([]byte{1}, header...), make([]byte, pad)...))
}

// sqliteFile builds an SQLite database of the given page size: page 1 holds the schema
// rows, page 2 the rows of the Packages table, later pages the rows' overflow. Each leaf
// gets as many more cell pointers as copies says (schema, Packages), naming its first cell.
func sqliteFile(pageSize int, schema, rows [][]byte, copies [2]int) []byte {
	db := &sqliteDB{usable: pageSize}
	file := make([]byte, 2*pageSize)
	copy(file, sqliteMagic)
	binary.BigEndian.PutUint16(file[16:], uint16(pageSize))
	if pageSize == 65536 {
		binary.BigEndian.PutUint16(file[16:], 1)
	}
	file[18], file[19], file[21], file[22], file[23] = 1, 1, 64, 32, 32
	binary.BigEndian.PutUint32(file[56:], 1)
	leaf := func(n, hdr int, rows [][]byte, copies int) {
		p := file[(n-1)*pageSize : n*pageSize]
		p[hdr] = sqliteLeafTable
		binary.BigEndian.PutUint16(p[hdr+3:], uint16(len(rows)+copies))
		end, first := pageSize, 0
		for i, row := range rows {
			cell := sqliteAppendVarint(nil, uint64(len(row)))
			cell = sqliteAppendVarint(cell, uint64(i+1))
			local := db.localSize(len(row))
			cell = append(cell, row[:local]...)
			if rest := row[local:]; len(rest) > 0 {
				cell = binary.BigEndian.AppendUint32(cell, uint32(len(file)/pageSize+1))
				for len(rest) > 0 {
					op := make([]byte, pageSize)
					chunk := min(len(rest), pageSize-4)
					copy(op[4:], rest[:chunk])
					if rest = rest[chunk:]; len(rest) > 0 {
						binary.BigEndian.PutUint32(op, uint32(len(file)/pageSize+2))
					}
					file = append(file, op...)
					p = file[(n-1)*pageSize : n*pageSize]
				}
			}
			end -= len(cell)
			copy(p[end:], cell)
			if i == 0 {
				first = end
			}
			binary.BigEndian.PutUint16(p[hdr+8+2*i:], uint16(end))
		}
		binary.BigEndian.PutUint16(p[hdr+5:], uint16(end))
		for i := range copies {
			binary.BigEndian.PutUint16(p[hdr+8+2*(len(rows)+i):], uint16(first))
		}
	}
	leaf(1, 100, schema, copies[0])
	leaf(2, 0, rows, copies[1])
	return file
}

func TestParseRpmDBSqliteRecords(t *testing.T) {
	// Not parallel: allocated measures the whole process.
	// Rows of a million one-byte NULL serial types cost a 32-byte value each, 64 MiB for a
	// file of 2 MiB, when every column of a record was kept.
	const nulls = 1 << 20
	b := sqliteFile(4096, [][]byte{sqliteSchemaRow(2, nulls)}, [][]byte{sqlitePackagesRow(minimalRpmHeader, nulls, 0)}, [2]int{})
	var got []Package
	var err error
	n := allocated(func() { got, err = ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 8<<20) })
	want := []Package{{Name: "a", Version: "1-1", SourceName: "a", SourceVersion: "1-1", Type: TypeRpm}}
	if diff := cmp.Diff(want, got); err != nil || diff != "" {
		t.Errorf("err %v, (-want +got):\n%s", err, diff)
	}
	if n > 8*uint64(len(b)) {
		t.Errorf("a database of %d bytes allocated %d bytes", len(b), n)
	}
}

func TestParseRpmDBSqliteSharedCells(t *testing.T) {
	// Not parallel: allocated measures the whole process.
	// 16,000 cell pointers naming one cell of 30 KiB: copying the row for each allocated
	// 480 MiB from a file of 128 KiB, and as much for each further page.
	const pageSize, copies, pad = 65536, 16000, 30 << 10
	schema := sqliteSchemaRow(2, 0)
	// In the schema table, rows of other tables (here an index) are skipped.
	index := sqliteRecord([]uint64{sqliteText(5), sqliteText(1), sqliteText(1), 1, sqliteText(pad)}, append([]byte("indexii"), make([]byte, pad)...))
	pkg := sqlitePackagesRow(minimalRpmHeader, 0, pad)
	b := sqliteFile(pageSize, [][]byte{index, schema}, [][]byte{pkg}, [2]int{})
	if got, err := ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 1<<20); err != nil || len(got) != 1 {
		t.Fatalf("without the copies: %d packages, err %v; want one", len(got), err)
	}
	for name, b := range map[string][]byte{
		"schema":   sqliteFile(pageSize, [][]byte{index, schema}, [][]byte{pkg}, [2]int{copies, 0}),
		"Packages": sqliteFile(pageSize, [][]byte{schema}, [][]byte{pkg}, [2]int{0, copies}),
	} {
		var err error
		n := allocated(func() { _, err = ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 1<<20) })
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
		if n > 8*uint64(len(b)) {
			t.Errorf("%s: a database of %d bytes allocated %d bytes", name, len(b), n)
		}
	}
}

// ndbFile builds an ndb database holding the given headers as packages 1, 2, ...
func ndbFile(headers [][]byte) []byte {
	slotPages := (2+len(headers))*ndbSlotSize/ndbSlotPage + 1
	file := make([]byte, slotPages*ndbSlotPage)
	binary.LittleEndian.PutUint32(file, ndbMagic)
	binary.LittleEndian.PutUint32(file[12:], uint32(slotPages))
	for s := 2; s < len(file)/ndbSlotSize; s++ {
		binary.LittleEndian.PutUint32(file[s*ndbSlotSize:], ndbSlotMagic)
	}
	for i, h := range headers {
		slot := file[(2+i)*ndbSlotSize:]
		blocks := (16 + len(h) + ndbBlockSize - 1) / ndbBlockSize
		binary.LittleEndian.PutUint32(slot[4:], uint32(i+1))
		binary.LittleEndian.PutUint32(slot[8:], uint32(len(file)/ndbBlockSize))
		binary.LittleEndian.PutUint32(slot[12:], uint32(blocks))
		blob := make([]byte, blocks*ndbBlockSize)
		binary.LittleEndian.PutUint32(blob, ndbBlobMagic)
		binary.LittleEndian.PutUint32(blob[4:], uint32(i+1))
		binary.LittleEndian.PutUint32(blob[12:], uint32(len(h)))
		copy(blob[16:], h)
		file = append(file, blob...)
	}
	return file
}

func TestParseRpmDBPackageLimit(t *testing.T) {
	t.Parallel()
	// One more minimal header than the limit, each 80 bytes: a 512 MiB database holds
	// millions of them, each a Package before they were compacted.
	headers := make([][]byte, maxRpmPackages+1)
	for i := range headers {
		headers[i] = minimalRpmHeader
	}
	b := ndbFile(headers)
	got, err := ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 1<<20)
	if !errors.Is(err, ErrLimit) || got != nil {
		t.Errorf("%d packages: got %d, err %v; want ErrLimit", len(headers), len(got), err)
	}
	// Freeing the last slot leaves as many packages as the limit allows.
	b = corrupt(b, func(b []byte) { binary.LittleEndian.PutUint32(b[(2+maxRpmPackages)*ndbSlotSize+4:], 0) })
	got, err = ParseRpmDB(t.Context(), bytes.NewReader(b), int64(len(b)), 1<<20)
	if err != nil || len(got) != 1 {
		t.Errorf("%d packages: got %d, err %v; want one after compaction", maxRpmPackages, len(got), err)
	}
}

func TestParseRpmDBCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, name := range rpmFixtures {
		b := rpmFixture(t, name)
		if _, err := ParseRpmDB(ctx, bytes.NewReader(b), int64(len(b)), 1<<20); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err %v, want context.Canceled", name, err)
		}
	}
}

// stallingReader reads nothing, without an error, past its first 512 bytes: a ReaderAt
// that breaks its contract.
type stallingReader struct{ b []byte }

func (r stallingReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= 512 {
		return 0, nil
	}
	return bytes.NewReader(r.b[:512]).ReadAt(p, off)
}

func TestParseRpmDBStallingReader(t *testing.T) {
	t.Parallel()
	for _, name := range rpmFixtures {
		b := rpmFixture(t, name)
		if _, err := ParseRpmDB(t.Context(), stallingReader{b}, int64(len(b)), 1<<20); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestSplitSourceRPM(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		"openssl-3.0.7-27.el9.src.rpm":                     {"openssl", "3.0.7-27.el9"},
		"python3.11-3.11.5-1.el9_3.src.rpm":                {"python3.11", "3.11.5-1.el9_3"},
		"kernel-rt-5.14.0-362.8.1.el9_3.nosrc.rpm":         {"kernel-rt", "5.14.0-362.8.1.el9_3"},
		"nodejs-16.20.2-1.module+el8.9.0+1234+abc.src.rpm": {"nodejs", "16.20.2-1.module+el8.9.0+1234+abc"},
		"":                         {},
		"(none)":                   {},
		"noversion.src.rpm":        {},
		"one-dash.src.rpm":         {},
		"-1.0-1.src.rpm":           {},
		"name-1.0-.src.rpm":        {},
		"name--1.src.rpm":          {},
		"openssl-3.0.7-27.el9.rpm": {},
	} {
		name, vr, ok := splitSourceRPM(in)
		if got := [2]string{name, vr}; got != want || ok != (want[0] != "") {
			t.Errorf("%q: got %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestReadLayerRpm(t *testing.T) {
	t.Parallel()
	// Past spoolThreshold the database is read from a temporary file; zeros after the last
	// page change nothing.
	big := append(rpmFixture(t, "rpmdb.sqlite"), make([]byte, spoolThreshold)...)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body []byte, typ byte, link string) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: typ, Linkname: link})
		tw.Write(body)
	}
	add("var/lib/rpm/rpmdb.sqlite", big, tar.TypeReg, "")
	add("var/lib/rpm/rpmdb.sqlite-wal", nil, tar.TypeReg, "")
	add("usr/lib/sysimage/rpm/Packages.db", rpmFixture(t, "Packages.db"), tar.TypeReg, "")
	add("usr/share/rpm/Packages", nil, tar.TypeSymlink, "../../lib/sysimage/rpm/Packages.db")
	add("opt/var/lib/rpm/Packages", rpmFixture(t, "Packages"), tar.TypeReg, "") // not where rpm looks
	tw.Close()
	tmp := t.TempDir()
	l, err := ReadLayer(t.Context(), &buf, Options{TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	want := &Layer{Format: FormatVersion, Files: []File{
		{Path: "usr/lib/sysimage/rpm/Packages.db", Packages: rpmFixturePackages("usr/lib/sysimage/rpm/Packages.db")},
		{Path: "usr/share/rpm/Packages", Symlink: true},
		{Path: "var/lib/rpm/rpmdb.sqlite", Packages: rpmFixturePackages("var/lib/rpm/rpmdb.sqlite")},
	}}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	buf.Reset()
	tw = tar.NewWriter(&buf)
	add("var/lib/rpm/Packages", rpmFixture(t, "Packages"), tar.TypeReg, "")
	tw.Close()
	if _, err := ReadLayer(t.Context(), bytes.NewReader(buf.Bytes()), Options{MaxBinaryBytes: 1024}); !errors.Is(err, ErrLimit) {
		t.Errorf("database over MaxBinaryBytes: err %v, want ErrLimit", err)
	}
}

func TestMergeRpm(t *testing.T) {
	t.Parallel()
	db := File{Path: "var/lib/rpm/rpmdb.sqlite", Packages: rpmFixturePackages("var/lib/rpm/rpmdb.sqlite")[:1]}
	for _, tt := range []struct{ osRelease, want string }{
		{"ID=rocky\nVERSION_ID=9.2\n", "Rocky Linux:9"},
		{"ID=\"rhel\"\nVERSION_ID=\"8.10\"\n", "Red Hat:enterprise_linux:8"},
		{"ID=fedora\nVERSION_ID=40\n", ""},
		{"ID=debian\nVERSION_ID=12\n", ""},
	} {
		img := Merge([]*Layer{{Files: []File{{Path: "etc/os-release", OSRelease: ParseOSRelease([]byte(tt.osRelease))}, db}}})
		if got := img.Packages[0].Ecosystem; got != tt.want {
			t.Errorf("%q: ecosystem %q, want %q", tt.osRelease, got, tt.want)
		}
	}
}
