package scan

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// debianDB loads the shared bundle's Debian records, edited: edit returns the record to
// keep (possibly changed) or nil to drop it.
func debianDB(t testing.TB, edit func(rec map[string]any) map[string]any) *vulndb.DB {
	t.Helper()
	zr, err := zip.OpenReader(filepath.Join(sharedVulnDB, "osv", "Debian", "all.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		var rec map[string]any
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		if rec = edit(rec); rec == nil {
			continue
		}
		b, _ = json.Marshal(rec)
		w, _ := zw.Create(f.Name)
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := vulndb.LoadArchives(context.Background(), []vulndb.Archive{{Ecosystem: "Debian", Reader: bytes.NewReader(buf.Bytes()), Size: int64(buf.Len())}}, vulndb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func affectedName(rec map[string]any) string {
	return rec["affected"].([]any)[0].(map[string]any)["package"].(map[string]any)["name"].(string)
}

func TestStoredInventory(t *testing.T) {
	t.Parallel()
	_, db := loadTestDB(t)
	img := imageOf(t, debianLayers(t)...)
	stored, err := NewIndexer(IndexOptions{}).Inventory(t.Context(), img, "sha256:feed")
	if err != nil {
		t.Fatal(err)
	}
	b, err := stored.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeInventory(b)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Scan(t.Context(), img, "sha256:feed", db, Policy{FailOn: osv.High}, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, back.Report(db, Policy{FailOn: osv.High})); diff != "" {
		t.Errorf("report from stored inventory differs from Scan (-scan +stored):\n%s", diff)
	}

	tests := []struct {
		name string
		data string
		want error
	}{
		{"not json", "{", ErrMalformedInventory},
		{"no inventory", fmt.Sprintf(`{"format":1,"inventoryFormat":%d}`, inventory.FormatVersion), ErrMalformedInventory},
		{"old format", fmt.Sprintf(`{"format":0,"inventoryFormat":%d,"inventory":{}}`, inventory.FormatVersion), ErrStaleInventory},
		{"old extractors", `{"format":1,"inventoryFormat":1,"inventory":{}}`, ErrStaleInventory},
		{"minimal", fmt.Sprintf(`{"format":1,"inventoryFormat":%d,"inventory":{}}`, inventory.FormatVersion), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := DecodeInventory([]byte(tt.data))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && (s.Inventory.Packages == nil || s.Image.Layers == nil) {
				t.Errorf("decoded inventory has nil slices: %+v", s)
			}
		})
	}
}

func TestRematch(t *testing.T) {
	t.Parallel()
	img := imageOf(t, debianLayers(t)...)
	stored, err := NewIndexer(IndexOptions{}).Inventory(t.Context(), img, "")
	if err != nil {
		t.Fatal(err)
	}
	keep := func(rec map[string]any) map[string]any { return rec }
	noPerl := func(rec map[string]any) map[string]any {
		if affectedName(rec) == "perl" {
			return nil
		}
		return rec
	}
	ratedPCRE := func(rec map[string]any) map[string]any {
		if rec = noPerl(rec); rec != nil && affectedName(rec) == "pcre2" {
			rec["database_specific"] = map[string]any{"severity": "HIGH"}
		}
		return rec
	}
	full, small, rated := debianDB(t, keep), debianDB(t, noPerl), debianDB(t, ratedPCRE)
	ignoreUnknown := Policy{FailOn: osv.High, UnknownAs: osv.Unknown}

	tests := []struct {
		name                   string
		old, new               *vulndb.DB // old nil: no previous report
		policy                 Policy
		verdict, findings      bool
		added, removed, failed int
	}{
		{"first scan", nil, full, Policy{}, true, true, 27, 0, 0},
		{"same database", full, full, Policy{}, false, false, 0, 0, 0},
		{"records added", small, full, Policy{}, false, true, 26, 0, 0},
		{"records removed", full, small, Policy{}, false, true, 0, 26, 0},
		{"added findings fail unknown-as-critical", small, full, Policy{FailOn: osv.Critical}, false, true, 26, 0, 27},
		{"severity raised flips verdict", small, rated, ignoreUnknown, true, true, 0, 0, 1},
		{"severity lowered flips verdict", rated, small, ignoreUnknown, true, true, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev *Report
			if tt.old != nil {
				prev = stored.Report(tt.old, tt.policy)
			}
			r, c := Rematch(stored, prev, tt.new, tt.policy)
			if c.Verdict != tt.verdict || c.Findings != tt.findings || len(c.Added) != tt.added || len(c.Removed) != tt.removed {
				t.Errorf("change = verdict %v findings %v +%d -%d, want %v %v +%d -%d",
					c.Verdict, c.Findings, len(c.Added), len(c.Removed), tt.verdict, tt.findings, tt.added, tt.removed)
			}
			if c.Changed() != (tt.verdict || tt.findings) {
				t.Errorf("Changed() = %v", c.Changed())
			}
			if got := violations(r); got != tt.failed {
				t.Errorf("violations = %d, want %d", got, tt.failed)
			}
			if r.DB.Digest != tt.new.Digest || r.Image.Ecosystem != "Debian:12" || len(r.Image.Layers) != 2 {
				t.Errorf("report identity: db %s image %+v", r.DB.Digest, r.Image)
			}
		})
	}

	// A previous report in another order (as decoded from elsewhere) compares the same.
	prev := stored.Report(full, Policy{})
	slices.Reverse(prev.Findings)
	if _, c := Rematch(stored, prev, full, Policy{}); c.Changed() {
		t.Errorf("reordered previous report: %+v", c)
	}
}

var (
	benchDBOnce sync.Once
	benchDB     *vulndb.DB
	benchInv    *StoredInventory
)

// benchInventory builds an inventory the size of a real application image against the
// shared bundle: an Alpine 3.20 base of 150 apk packages (their names taken from the
// bundle's records, so that every one is looked up and range-checked, versions old enough
// that most are affected), 120 Go modules and the Go standard library from a binary, and a
// few npm packages: 280 packages, hundreds of findings.
func benchInventory(b *testing.B) (*StoredInventory, *vulndb.DB) {
	benchDBOnce.Do(func() {
		db, err := vulndb.Load(context.Background(), sharedVulnDB, vulndb.Options{})
		if err != nil {
			b.Fatal(err)
		}
		names := func(eco string, n int) []string {
			zr, err := zip.OpenReader(filepath.Join(sharedVulnDB, "osv", eco, "all.zip"))
			if err != nil {
				b.Fatal(err)
			}
			defer zr.Close()
			seen := map[string]bool{}
			var out []string
			for _, f := range zr.File {
				rc, _ := f.Open()
				var rec osv.Record
				json.NewDecoder(rc).Decode(&rec)
				rc.Close()
				for _, a := range rec.Affected {
					if (eco != "Alpine" || a.Package.Ecosystem == "Alpine:v3.20") && !seen[a.Package.Name] {
						seen[a.Package.Name] = true
						out = append(out, a.Package.Name)
					}
				}
			}
			slices.Sort(out)
			if len(out) < n {
				b.Fatalf("%s: only %d package names", eco, len(out))
			}
			return out[:n]
		}
		inv := &inventory.Image{OS: &inventory.OSRelease{ID: "alpine", VersionID: "3.20.3", PrettyName: "Alpine Linux v3.20"}}
		for i, n := range names("Alpine", 150) {
			v := []string{"1.0.0-r0", "2.5.1-r3", "3.1.4-r1"}[i%3]
			inv.Packages = append(inv.Packages, inventory.Package{Name: n + "-libs", Version: v, SourceName: n, SourceVersion: v,
				Ecosystem: "Alpine:v3.20", Type: inventory.TypeApk, Location: "lib/apk/db/installed"})
		}
		for i, n := range names("Go", 120) {
			v := []string{"0.1.0", "1.2.3", "0.0.0-20200101000000-abcdefabcdef"}[i%3]
			inv.Packages = append(inv.Packages, inventory.Package{Name: n, Version: v, Ecosystem: "Go", Type: inventory.TypeGoBinary, Location: "usr/local/bin/app"})
		}
		inv.Packages = append(inv.Packages, inventory.Package{Name: "stdlib", Version: "1.21.0", Ecosystem: "Go", Type: inventory.TypeGoBinary, Location: "usr/local/bin/app"})
		for _, p := range [][2]string{{"lodash", "4.17.20"}, {"minimist", "1.2.5"}, {"express", "4.18.2"}, {"react", "18.2.0"}, {"debug", "2.6.9"}, {"ms", "2.0.0"}, {"qs", "6.11.0"}, {"semver", "7.5.4"}, {"chalk", "4.1.2"}} {
			inv.Packages = append(inv.Packages, inventory.Package{Name: p[0], Version: p[1], Ecosystem: "npm", Type: inventory.TypeNpm, Location: "app/package-lock.json"})
		}
		benchDB, benchInv = db, NewStoredInventory(ImageInfo{ID: "sha256:bench"}, inv)
	})
	if benchDB == nil {
		b.Fatal("benchmark database failed to load")
	}
	return benchInv, benchDB
}

// BenchmarkRematch measures re-matching one stored image inventory against the shared
// bundle after a database update. The target is under 50 ms per image.
func BenchmarkRematch(b *testing.B) {
	stored, db := benchInventory(b)
	prev := stored.Report(db, Policy{FailOn: osv.High})
	for b.Loop() {
		if _, c := Rematch(stored, prev, db, Policy{FailOn: osv.High}); c.Changed() {
			b.Fatal("unexpected change")
		}
	}
	b.ReportMetric(float64(len(stored.Inventory.Packages)), "packages")
	b.ReportMetric(float64(len(prev.Findings)), "findings")
}

// BenchmarkRematchFleet measures re-matching 20 images that share a base (the benchmark
// inventory) and differ in a few packages each, through one Matcher, as the server does
// after a database import; the metric is per image.
func BenchmarkRematchFleet(b *testing.B) {
	base, db := benchInventory(b)
	const images = 20
	var fleet []*StoredInventory
	for i := range images {
		inv := &inventory.Image{OS: base.Inventory.OS, Packages: slices.Clone(base.Inventory.Packages)}
		for j := range 10 {
			inv.Packages = append(inv.Packages, inventory.Package{Name: "example.com/app" + string(rune('a'+i)) + "/m" + string(rune('a'+j)), Version: "1.0.0", Ecosystem: "Go", Type: inventory.TypeGoBinary, Location: "app"})
		}
		fleet = append(fleet, NewStoredInventory(ImageInfo{ID: "sha256:bench"}, inv))
	}
	for b.Loop() {
		m := NewMatcher(db)
		for _, s := range fleet {
			m.Rematch(s, nil, Policy{FailOn: osv.High})
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*images)/1e6, "ms/image")
}

func TestMatcherAgreesWithMatch(t *testing.T) {
	t.Parallel()
	_, db := loadTestDB(t)
	m := NewMatcher(db)
	for _, layers := range [][][]byte{debianLayers(t), alpineLayers(t), debianLayers(t)} {
		stored, err := NewIndexer(IndexOptions{}).Inventory(t.Context(), imageOf(t, layers...), "")
		if err != nil {
			t.Fatal(err)
		}
		want := stored.Report(db, Policy{FailOn: osv.Medium})
		got, c := m.Rematch(stored, want, Policy{FailOn: osv.Medium})
		if diff := cmp.Diff(want, got); diff != "" || c.Changed() {
			t.Errorf("Matcher report differs (-Match +Matcher), change %+v:\n%s", c, diff)
		}
	}
}

// TestRematchCoverage: a new database that adds the archive an image's packages were not
// checked against changes the report even when no finding does, and so does one that
// drops it.
func TestRematchCoverage(t *testing.T) {
	t.Parallel()
	stored, err := NewIndexer(IndexOptions{}).Inventory(t.Context(), imageOf(t, ubuntuLayers(t)...), "")
	if err != nil {
		t.Fatal(err)
	}
	// The Ubuntu record names no package of the image: only the coverage changes.
	npm := func() vulndb.Archive { return archive(t, "npm", record("R-npm", "npm")) }
	without := loadArchives(t, npm())
	with := loadArchives(t, npm(), archive(t, "Ubuntu", record("R-Ubuntu", "Ubuntu:22.04:LTS")))
	for _, tt := range []struct {
		name     string
		old, new *vulndb.DB
		changed  bool
	}{
		{"archive added", without, with, true},
		{"archive dropped", with, without, true},
		{"same coverage", with, with, false},
	} {
		r, c := Rematch(stored, stored.Report(tt.old, Policy{}), tt.new, Policy{})
		if c.Coverage != tt.changed || c.Changed() != tt.changed || c.Findings || c.Verdict {
			t.Errorf("%s: change %+v (unchecked %+v), want coverage changed = %v only", tt.name, c, r.Unchecked, tt.changed)
		}
	}
	// A reason worded otherwise (by an older release) is no change.
	prev := stored.Report(without, Policy{})
	prev.Unchecked[0].Reason = "worded otherwise"
	if _, c := Rematch(stored, prev, without, Policy{}); c.Changed() {
		t.Errorf("a reworded reason changed the report: %+v", c)
	}
}

// violations is the report's count of findings over its threshold, 0
// without one.
func violations(r *Report) int {
	if r.Policy == nil {
		return 0
	}
	return r.Policy.Violations
}
