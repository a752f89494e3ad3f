package vulndb

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/scan/osv"
)

func writeZip(t *testing.T, p string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for name, body := range files {
		w, _ := zw.Create(name)
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestLoadShared(t *testing.T) {
	t.Parallel()
	db, err := Load(t.Context(), "../../../shared/vulndb", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if db.Records != 15+6703+4291+3 {
		t.Errorf("records = %d", db.Records)
	}
	if diff := cmp.Diff([]string{"Alpine", "Debian", "Go", "npm"}, db.Ecosystems); diff != "" {
		t.Errorf("ecosystems (-want +got):\n%s", diff)
	}
	if len(db.Lookup("Debian:12", "perl")) != 13 || len(db.Lookup("Debian:11", "perl")) != 0 {
		t.Errorf("perl lookups: %d in Debian:12, %d in Debian:11", len(db.Lookup("Debian:12", "perl")), len(db.Lookup("Debian:11", "perl")))
	}
	if !strings.HasPrefix(db.Digest, "sha256:") || db.Modified.IsZero() {
		t.Errorf("digest %q modified %v", db.Digest, db.Modified)
	}
}

const rec = `{"id":"%s","modified":"2024-01-02T00:00:00Z"%s,"affected":[{"package":{"ecosystem":"%s","name":"%s"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0"}]}]}]}`

func TestLoadLayoutsAndRules(t *testing.T) {
	t.Parallel()
	mk := func(id, extra, eco, name string) string {
		s := rec
		for _, v := range []string{id, extra, eco, name} {
			s = strings.Replace(s, "%s", v, 1)
		}
		return s
	}
	dir := t.TempDir()
	writeZip(t, filepath.Join(dir, "PyPI", "all.zip"), map[string]string{
		"A.json": mk("A", "", "PyPI", "Foo_Bar"),
		"W.json": mk("W", `,"withdrawn":"2024-01-03T00:00:00Z"`, "PyPI", "foo-bar"),
	})
	writeZip(t, filepath.Join(dir, "Debian", "all.zip"), map[string]string{
		"D.json": mk("D", "", "Debian", "openssl"),
	})
	db, err := Load(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Lookup("PyPI", "foo.bar"); len(got) != 1 || got[0].Record.ID != "A" {
		t.Errorf("PyPI normalized lookup = %v (withdrawn record must be absent)", got)
	}
	if got := db.Lookup("Debian:12", "openssl"); len(got) != 1 {
		t.Errorf("release-less record must apply to Debian:12: %v", got)
	}
	if db.Records != 3 {
		t.Errorf("records = %d", db.Records)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	if _, err := Load(t.Context(), t.TempDir(), Options{}); !errors.Is(err, ErrNoDatabase) {
		t.Errorf("empty dir: %v", err)
	}
	dir := t.TempDir()
	writeZip(t, filepath.Join(dir, "osv", "npm", "all.zip"), map[string]string{
		"GOOD.json": `{"id":"GOOD","modified":"2024-01-01T00:00:00Z"}`,
		"BAD.json":  `{"id":"BAD","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"SEMVER","events":[{"fixed":"1"}]}]}]}`,
	})
	_, err := Load(t.Context(), dir, Options{})
	if !errors.Is(err, osv.ErrInvalidRecord) || !strings.Contains(err.Error(), "npm/all.zip") || !strings.Contains(err.Error(), "BAD.json") || !strings.Contains(err.Error(), "no introduced event") {
		t.Errorf("malformed record: err = %v; want it to name the archive, the file and the reason", err)
	}
	db, err := Load(t.Context(), dir, Options{SkipInvalid: true})
	if err != nil || len(db.Rejected) != 1 || db.Records != 1 {
		t.Errorf("SkipInvalid: db %+v err %v", db, err)
	}
	big := t.TempDir()
	writeZip(t, filepath.Join(big, "npm", "all.zip"), map[string]string{"A.json": strings.Repeat(" ", 2048) + `{"id":"A","modified":"2024-01-01T00:00:00Z"}`})
	if _, err := Load(t.Context(), big, Options{MaxTotalBytes: 1024}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over total size: %v", err)
	}
}

func TestIndexEcosystem(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Red Hat:enterprise_linux:9::appstream":                    "Red Hat:enterprise_linux:9",
		"Red Hat:enterprise_linux:8::crb":                          "Red Hat:enterprise_linux:8",
		"Red Hat:enterprise_linux:9":                               "Red Hat:enterprise_linux:9",
		"Red Hat:rhel_eus:9.2::baseos":                             "Red Hat:rhel_eus:9.2::baseos",
		"Red Hat:openshift:4.14::el9":                              "Red Hat:openshift:4.14::el9",
		"SUSE:Linux Enterprise Module for Basesystem 15 SP5":       "SUSE:15 SP5",
		"SUSE:Linux Enterprise Server 15 SP5-LTSS":                 "SUSE:15 SP5",
		"SUSE:Linux Enterprise Server for SAP Applications 12 SP5": "SUSE:12 SP5",
		"SUSE:Linux Enterprise Server 15":                          "SUSE:15",
		"SUSE:Linux Enterprise Micro 5.5":                          "SUSE:Linux Enterprise Micro 5.5",
		"openSUSE:Leap 15.5":                                       "openSUSE:Leap 15.5",
		"Rocky Linux:9":                                            "Rocky Linux:9",
		"Debian:12":                                                "Debian:12",
		"Ubuntu:22.04:LTS":                                         "Ubuntu:22.04",
		"Ubuntu:24.10":                                             "Ubuntu:24.10",
		"Ubuntu:Pro:22.04:LTS":                                     "Ubuntu:Pro:22.04:LTS",
		"Ubuntu:Pro:FIPS-updates:20.04:LTS":                        "Ubuntu:Pro:FIPS-updates:20.04:LTS",
		"Ubuntu:Nvidia-BlueField:22.04:LTS":                        "Ubuntu:Nvidia-BlueField:22.04:LTS",
	} {
		if got := IndexEcosystem(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestLookupProductStreams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mk := func(id, eco string) string {
		return `{"id":"` + id + `","modified":"2024-01-02T00:00:00Z","affected":[{"package":{"ecosystem":"` + eco + `","name":"openssl-libs"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:3.0.7-28.el9"}]}]}]}`
	}
	writeZip(t, filepath.Join(dir, "Red Hat", "all.zip"), map[string]string{
		"A.json": mk("A", "Red Hat:enterprise_linux:9::baseos"),
		"B.json": mk("B", "Red Hat:enterprise_linux:9::appstream"),
		"C.json": mk("C", "Red Hat:enterprise_linux:8::baseos"),
		"D.json": mk("D", "Red Hat:rhel_eus:9.2::baseos"),
	})
	writeZip(t, filepath.Join(dir, "SUSE", "all.zip"), map[string]string{
		"E.json": mk("E", "SUSE:Linux Enterprise Module for Basesystem 15 SP5"),
		"F.json": mk("F", "SUSE:Linux Enterprise Server 15 SP4-LTSS"),
	})
	db, err := Load(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Record.ID)
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff([]string{"A", "B"}, ids(db.Lookup("Red Hat:enterprise_linux:9", "openssl-libs"))); diff != "" {
		t.Errorf("RHEL 9 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"E"}, ids(db.Lookup("SUSE:15 SP5", "openssl-libs"))); diff != "" {
		t.Errorf("SLES 15 SP5 (-want +got):\n%s", diff)
	}
}

func TestOpenAgreesWithLoad(t *testing.T) {
	t.Parallel()
	checkOpenAgreesWithLoad(t, Options{})
}

// TestOpenCacheAgreesWithLoad opens the bundle with a cache three times: the first Open
// hashes the archives and Need writes their indexes, the next ones read both.
func TestOpenCacheAgreesWithLoad(t *testing.T) {
	t.Parallel()
	opts := Options{CacheDir: t.TempDir()}
	checkOpenAgreesWithLoad(t, opts)
	indexes, _ := filepath.Glob(filepath.Join(opts.CacheDir, "vulndb", "*.index"))
	sums, _ := filepath.Glob(filepath.Join(opts.CacheDir, "vulndb", "*.sum"))
	if len(indexes) != 4 || len(sums) != 4 {
		t.Fatalf("cache holds %d indexes and %d sums, want 4 of each (every archive was needed)", len(indexes), len(sums))
	}
	db := checkOpenAgreesWithLoad(t, opts)
	for eco, a := range db.lazy.archives {
		if a.index == nil {
			t.Errorf("%s: the cached index was not used", eco)
		}
	}
	checkOpenAgreesWithLoad(t, opts)
}

func checkOpenAgreesWithLoad(t *testing.T, opts Options) *DB {
	t.Helper()
	full, err := Load(t.Context(), "../../../shared/vulndb", Options{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(t.Context(), "../../../shared/vulndb", opts)
	if err != nil {
		t.Fatal(err)
	}
	if db.Digest != full.Digest || db.Records != full.Records || !slices.Equal(db.Ecosystems, full.Ecosystems) {
		t.Errorf("index: got %s %d %v, want %s %d %v", db.Digest, db.Records, db.Ecosystems, full.Digest, full.Records, full.Ecosystems)
	}
	pkgs := []osv.Package{
		{Ecosystem: "Debian:12", Name: "perl"}, {Ecosystem: "Debian:12", Name: "apt"}, {Ecosystem: "Debian:11", Name: "perl"},
		{Ecosystem: "Go", Name: "stdlib"}, {Ecosystem: "Go", Name: "golang.org/x/text"},
		{Ecosystem: "npm", Name: "lodash"}, {Ecosystem: "PyPI", Name: "requests"},
	}
	if err := db.Need(t.Context(), pkgs); err != nil {
		t.Fatal(err)
	}
	ids := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Record.ID+" "+e.Affected.Package.Ecosystem+" "+e.Affected.Package.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, p := range pkgs {
		want := ids(full.Lookup(p.Ecosystem, p.Name))
		if diff := cmp.Diff(want, ids(db.Lookup(p.Ecosystem, p.Name))); diff != "" {
			t.Errorf("Lookup(%q, %q) (-Load +Open):\n%s", p.Ecosystem, p.Name, diff)
		}
		if db.Covers(p.Ecosystem) != full.Covers(p.Ecosystem) || db.CoversBase(p.Ecosystem) != full.CoversBase(p.Ecosystem) {
			t.Errorf("Covers(%q) = %v, Load's %v", p.Ecosystem, db.Covers(p.Ecosystem), full.Covers(p.Ecosystem))
		}
	}
	if db.Covers("Alpine:v3.20") {
		t.Error("the Alpine archive was loaded though no package needed it")
	}
	if err := db.Need(t.Context(), []osv.Package{{Ecosystem: "Alpine:v3.20", Name: "openssl"}}); err != nil {
		t.Fatal(err)
	}
	want := ids(full.Lookup("Alpine:v3.20", "openssl"))
	if diff := cmp.Diff(want, ids(db.Lookup("Alpine:v3.20", "openssl"))); diff != "" || len(want) == 0 || !db.Covers("Alpine:v3.20") {
		t.Errorf("Alpine after a second Need (-Load +Open), %d records:\n%s", len(want), diff)
	}
	if !db.Modified.Equal(full.Modified) {
		t.Errorf("modified %v, Load's %v (every archive with records loaded)", db.Modified, full.Modified)
	}
	return db
}

// TestOpenCacheRewritten rewrites a cached archive: the next Open hashes it again and Need
// reads its new records; an archive rewritten between Open and Need fails Need.
func TestOpenCacheRewritten(t *testing.T) {
	t.Parallel()
	dir, cache := t.TempDir(), t.TempDir()
	p := filepath.Join(dir, "npm", "all.zip")
	write := func(id, name string) {
		writeZip(t, p, map[string]string{id + ".json": fmt.Sprintf(rec, id, "", "npm", name)})
		// A rewrite within the file system's time resolution must still be seen.
		old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	lookup := func(db *DB, name string) []string {
		t.Helper()
		if err := db.Need(t.Context(), []osv.Package{{Ecosystem: "npm", Name: name}}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range db.Lookup("npm", name) {
			ids = append(ids, e.Record.ID)
		}
		return ids
	}
	open := func() *DB {
		t.Helper()
		db, err := Open(t.Context(), dir, Options{CacheDir: cache})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	write("A-1", "left-pad")
	db := open()
	if got := lookup(db, "left-pad"); !slices.Equal(got, []string{"A-1"}) {
		t.Fatalf("first open: %v", got)
	}
	first := db.Digest
	if got := lookup(open(), "left-pad"); !slices.Equal(got, []string{"A-1"}) {
		t.Fatalf("open from the cache: %v", got)
	}

	write("B-2", "right-pad")
	db = open()
	if db.Digest == first {
		t.Error("the rewritten archive kept its digest")
	}
	if got := lookup(db, "left-pad"); len(got) != 0 {
		t.Errorf("left-pad after the rewrite: %v", got)
	}
	if got := lookup(db, "right-pad"); !slices.Equal(got, []string{"B-2"}) {
		t.Errorf("right-pad after the rewrite: %v", got)
	}

	db = open()
	write("C-33", "right-pad") // another size: without a change time, size and mtime tell
	if err := db.Need(t.Context(), []osv.Package{{Ecosystem: "npm", Name: "right-pad"}}); err == nil {
		t.Error("an archive rewritten after Open was read")
	}
}

func TestDecodeIndex(t *testing.T) {
	t.Parallel()
	x := &archiveIndex{bytes: 42, modified: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), records: []indexedRecord{
		{file: "a b\n.json", method: 8, off: 30, csize: 12, size: 40, crc: 7, affected: []indexedAffected{
			{0, key{"npm", "x y"}}, {2, key{"Debian:12", "\"q\"\n"}},
		}},
		{file: "c.json", affected: []indexedAffected{{1, key{"Go", "stdlib"}}}},
	}}
	got, err := decodeIndex(x.encode())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(x, got, cmp.AllowUnexported(archiveIndex{}, indexedRecord{}, indexedAffected{}, key{})); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"", indexHeader + "\n", indexHeader + "\nx 2024-01-01T00:00:00Z\n",
		indexHeader + "\n1 2024-01-01T00:00:00Z\na 0 \"npm\" \"x\"\n",
		indexHeader + "\n1 2024-01-01T00:00:00Z\nr 8 1 2 3 4 unquoted\n",
		indexHeader + "\n1 2024-01-01T00:00:00Z\nr 8 1 2 3 4 \"f\"\na 0 \"npm\"\n",
	} {
		if _, err := decodeIndex([]byte(bad)); err == nil {
			t.Errorf("decodeIndex(%q) succeeded", bad)
		}
	}
}

func TestNeedErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeZip(t, filepath.Join(dir, "npm", "all.zip"), map[string]string{
		"GOOD.json": `{"id":"GOOD","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"y"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"}]}]}]}`,
		"BAD.json":  `{"id":"BAD","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},"ranges":[{"type":"SEMVER","events":[{"fixed":"1"}]}]}]}`,
	})
	writeZip(t, filepath.Join(dir, "Go", "all.zip"), map[string]string{"NOTJSON.json": `{"id":`})

	db, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Need(t.Context(), []osv.Package{{Ecosystem: "npm", Name: "y"}}); err != nil {
		t.Errorf("an invalid record of a package not needed failed the load: %v", err)
	}
	err = db.Need(t.Context(), []osv.Package{{Ecosystem: "npm", Name: "x"}})
	if !errors.Is(err, osv.ErrInvalidRecord) || !strings.Contains(err.Error(), "npm/all.zip") || !strings.Contains(err.Error(), "BAD.json") {
		t.Errorf("invalid record of a needed package: err = %v; want it to name the archive and the file", err)
	}
	err = db.Need(t.Context(), []osv.Package{{Ecosystem: "Go", Name: "stdlib"}})
	if !errors.Is(err, osv.ErrInvalidRecord) || !strings.Contains(err.Error(), "Go/all.zip") || !strings.Contains(err.Error(), "NOTJSON.json") {
		t.Errorf("record that is not JSON: err = %v", err)
	}

	db, err = Open(t.Context(), dir, Options{SkipInvalid: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Need(t.Context(), []osv.Package{{Ecosystem: "npm", Name: "x"}, {Ecosystem: "npm", Name: "y"}, {Ecosystem: "Go", Name: "stdlib"}}); err != nil {
		t.Fatal(err)
	}
	if len(db.Rejected) != 2 || len(db.Lookup("npm", "x")) != 0 || len(db.Lookup("npm", "y")) != 1 {
		t.Errorf("SkipInvalid: rejected %v, x %v, y %v", db.Rejected, db.Lookup("npm", "x"), db.Lookup("npm", "y"))
	}

	if err := os.WriteFile(filepath.Join(dir, "npm", "all.zip"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(t.Context(), dir, Options{})
	if err == nil {
		t.Errorf("a file that is not a zip opened: %+v", db)
	}
}

func TestTopLevelTime(t *testing.T) {
	t.Parallel()
	day := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]bool{
		`{"id":"A","modified":"2024-01-02T00:00:00Z"}`:                                                true,
		`{"database_specific":{"modified":"1999-01-01T00:00:00Z"},"modified":"2024-01-02T00:00:00Z"}`: true,
		`{"details":"\"modified\":\"1999-01-01T00:00:00Z\"","modified" : "2024-01-02T00:00:00Z"}`:     true,
		`{"affected":[{"modified":"1999-01-01T00:00:00Z"}],"modified":"2024-01-02T00:00:00Z"}`:        true,
		`{"modifi\u0065d":"2024-01-02T00:00:00Z"}`:                                                    false,
		`{"modified":"2024-01-02T00:00:00\u005a"}`:                                                    false,
		`{"id":"A"}`:                    false,
		`{"modified":"yesterday"}`:      false,
		`{"modified":"2024-01-02T00:00`: false,
	} {
		got, ok := topLevelTime([]byte(in), "modified")
		if ok != want || ok && !got.Equal(day) {
			t.Errorf("%s: got %v %v, want ok=%v", in, got, ok, want)
		}
	}
	// Every record of the shared bundle: the same time as the decoder's.
	for _, eco := range []string{"Alpine", "Debian", "Go", "npm"} {
		zr, err := zip.OpenReader(filepath.Join("../../../shared/vulndb/osv", eco, "all.zip"))
		if err != nil {
			t.Fatal(err)
		}
		for _, zf := range zr.File {
			rc, err := zf.Open()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			h, err := decodeHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := topLevelTime(b, "modified"); !ok || !got.Equal(h.Modified) {
				t.Errorf("%s/%s: got %v %v, decoder %v", eco, zf.Name, got, ok, h.Modified)
			}
		}
		zr.Close()
	}
}

func TestCountFiles(t *testing.T) {
	t.Parallel()
	count := func(data []byte) int {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, zf := range zr.File {
			if !zf.FileInfo().IsDir() {
				n++
			}
		}
		return n
	}
	for _, eco := range []string{"Alpine", "Debian", "Go", "npm"} {
		data, err := os.ReadFile(filepath.Join("../../../shared/vulndb/osv", eco, "all.zip"))
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := countFiles(bytes.NewReader(data), int64(len(data))); !ok || n != count(data) {
			t.Errorf("%s: %d %v, archive/zip %d", eco, n, ok, count(data))
		}
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"dir/", "dir/A.json", "B.json"} {
		if _, err := zw.Create(name); err != nil {
			t.Fatal(err)
		}
	}
	zw.SetComment("a comment")
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if n, ok := countFiles(bytes.NewReader(buf.Bytes()), int64(buf.Len())); !ok || n != 2 {
		t.Errorf("a directory and a comment: %d %v, want 2", n, ok)
	}
	data := buf.Bytes()
	for cut := 1; cut < len(data); cut += 7 {
		countFiles(bytes.NewReader(data[:len(data)-cut]), int64(len(data)-cut)) // must not panic
		bad := bytes.Clone(data)
		bad[cut] ^= 0xff
		if n, ok := countFiles(bytes.NewReader(bad), int64(len(bad))); ok && n > 3 {
			t.Errorf("damaged at %d: %d entries", cut, n)
		}
	}
}
