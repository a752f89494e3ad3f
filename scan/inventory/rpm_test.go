package inventory

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
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
	// hdr builds a header from index entries (tag, type, offset, count) and data.
	hdr := func(entries [][4]uint32, data string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(entries)))
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		for _, e := range entries {
			for _, v := range e {
				b = binary.BigEndian.AppendUint32(b, v)
			}
		}
		return append(b, data...)
	}
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
	} {
		if _, err := parseRpmHeader(b); !errors.Is(err, ErrMalformed) {
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
