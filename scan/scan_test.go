package scan

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/vulndb"
)

var (
	dbOnce sync.Once
	dbDir  string
	dbErr  error
	testDB *vulndb.DB
)

// loadTestDB loads testVulnDB once for the package's tests.
func loadTestDB(t *testing.T) (string, *vulndb.DB) {
	t.Helper()
	dbOnce.Do(func() {
		// The directory must outlive the test that first asks for it.
		dbDir = testVulnDB(&keepTB{TB: t})
		testDB, dbErr = vulndb.Load(context.Background(), dbDir, vulndb.Options{})
	})
	if dbErr != nil {
		t.Fatal(dbErr)
	}
	return dbDir, testDB
}

func TestScanFixtures(t *testing.T) {
	_, db := loadTestDB(t)
	tests := []struct {
		name      string
		layers    func(testing.TB) [][]byte
		want      []want
		ecosystem string
		packages  int
	}{
		{"debian", debianLayers, debianWant(), "Debian:12", 6},
		{"alpine", alpineLayers, alpineWant(), "Alpine:v3.20", 6},
		{"ubuntu", ubuntuLayers, ubuntuWant(), "Ubuntu:22.04", 4},
		{"wolfi", wolfiLayers, wolfiWant(), "Wolfi", 6},
		{"languages", languageLayers, languageWant(), "", 12},
		{"rocky", rockyLayers, rockyWant(), "Rocky Linux:9", 12},
		{"rhel", rhelLayers, rhelWant(), "Red Hat:enterprise_linux:9", 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := imageOf(t, tt.layers(t)...)
			for _, src := range []struct {
				name string
				path string
			}{
				{"docker-tar", writeDockerTar(t, img)},
				{"oci-layout-dir", writeLayoutDir(t, img)},
				{"oci-layout-tar", writeLayoutTar(t, img)},
			} {
				t.Run(src.name, func(t *testing.T) {
					ar, err := OpenArchive(t.Context(), src.path, t.TempDir())
					if err != nil {
						t.Fatal(err)
					}
					defer ar.Close()
					r, err := Scan(t.Context(), ar.Image, ar.Digest, db, Policy{}, IndexOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(tt.want, project(r.Findings)); diff != "" {
						t.Errorf("findings (-want +got):\n%s", diff)
					}
					if r.Image.Ecosystem != tt.ecosystem {
						t.Errorf("ecosystem = %q, want %q", r.Image.Ecosystem, tt.ecosystem)
					}
					if r.Packages != tt.packages {
						t.Errorf("packages = %d, want %d", r.Packages, tt.packages)
					}
					if len(r.Unchecked) != 0 {
						t.Errorf("unchecked packages with every ecosystem in the database: %+v", r.Unchecked)
					}
					id, _ := img.ConfigName()
					if r.Image.ID != id.String() {
						t.Errorf("image id = %s, want %s", r.Image.ID, id)
					}
					if strings.HasPrefix(src.name, "oci") {
						d, _ := img.Digest()
						if r.Image.Digest != d.String() {
							t.Errorf("image digest = %s, want %s", r.Image.Digest, d)
						}
					}
				})
			}
		})
	}
}

// archive zips OSV records as the all.zip of one ecosystem.
func archive(t *testing.T, eco string, records ...string) vulndb.Archive {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i, r := range records {
		w, _ := zw.Create(fmt.Sprintf("%d.json", i))
		_, _ = w.Write([]byte(r))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return vulndb.Archive{Ecosystem: eco, Reader: bytes.NewReader(buf.Bytes()), Size: int64(buf.Len())}
}

// record is an OSV record affecting every version of package zlib in the ecosystems given.
func record(id string, ecosystems ...string) string {
	var affected []string
	for _, e := range ecosystems {
		affected = append(affected, `{"package":{"ecosystem":"`+e+`","name":"zlib"},"versions":["0"]}`)
	}
	return `{"id":"` + id + `","modified":"2024-01-01T00:00:00Z","affected":[` + strings.Join(affected, ",") + `]}`
}

func loadArchives(t *testing.T, archives ...vulndb.Archive) *vulndb.DB {
	t.Helper()
	db, err := vulndb.LoadArchives(t.Context(), archives, vulndb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestUnchecked: packages the database cannot match are counted and named in the report, not
// silently passed: an ecosystem whose archive is missing, a release no record names, a
// distribution whose release is unknown, and one OSV has no ecosystem for. Coverage follows
// the records' ecosystems, not the archives' names.
func TestUnchecked(t *testing.T) {
	t.Parallel()
	db := loadArchives(t,
		archive(t, "npm", record("GHSA-1", "npm")),
		archive(t, "Debian", record("DEBIAN-1", "Debian:12")),
		archive(t, "Ubuntu", record("UBUNTU-1", "Ubuntu:22.04:LTS")),
		// SUSE's records name openSUSE releases too; there is no openSUSE archive.
		archive(t, "SUSE", record("SUSE-1", "SUSE:Linux Enterprise Server 15 SP5", "openSUSE:Leap 15.5")),
	)
	dpkgImage := func(osRelease string) func(testing.TB) [][]byte {
		return func(t testing.TB) [][]byte {
			return [][]byte{gzipBytes(t, tarBytes(t,
				file("etc/os-release", osRelease),
				file("var/lib/dpkg/status", readTestdata(t, "ubuntu-status")),
			))}
		}
	}
	rpmImage := func(osRelease string) func(testing.TB) [][]byte {
		return func(t testing.TB) [][]byte {
			return [][]byte{gzipBytes(t, tarBytes(t,
				file("etc/os-release", osRelease),
				file("var/lib/rpm/rpmdb.sqlite", rpmDB(t, "rpmdb.sqlite")),
			))}
		}
	}
	for _, tt := range []struct {
		name   string
		layers func(testing.TB) [][]byte
		want   []Unchecked
	}{
		{"ubuntu 22.04, covered", ubuntuLayers, nil},
		{"ubuntu 23.04, a release no record names", dpkgImage("ID=ubuntu\nVERSION_ID=\"23.04\"\n"),
			[]Unchecked{{"Ubuntu:23.04", "dpkg", 4, "the vulnerability database has no Ubuntu:23.04 records"}}},
		{"kali, a Debian derivative without a known release", dpkgImage("ID=kali\nVERSION_ID=\"2024.1\"\nID_LIKE=debian\n"),
			[]Unchecked{{"Debian", "dpkg", 4, `Debian records name a release, and the image's (distribution "kali") is not known`}}},
		{"alpine, no Alpine archive", alpineLayers,
			[]Unchecked{{"Alpine:v3.20", "apk", 6, "the vulnerability database has no Alpine records"}}},
		{"fedora, no OSV ecosystem", rpmImage("ID=fedora\nVERSION_ID=40\n"),
			[]Unchecked{{"", "rpm", 12, `no OSV ecosystem is known for distribution "fedora"`}}},
		{"openSUSE Leap, covered by the SUSE archive", rpmImage("ID=\"opensuse-leap\"\nVERSION_ID=\"15.5\"\n"), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Scan(t.Context(), imageOf(t, tt.layers(t)...), "", db, Policy{}, IndexOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, r.Unchecked); diff != "" {
				t.Errorf("unchecked (-want +got):\n%s", diff)
			}
			var out bytes.Buffer
			if err := r.WriteTable(&out); err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(out.String(), "warning:"); got != len(tt.want) {
				t.Errorf("%d warning lines, want %d:\n%s", got, len(tt.want), out.String())
			}
			for _, u := range tt.want {
				if line := fmt.Sprintf("warning:  %d %s packages", u.Packages, u.Type); !strings.Contains(out.String(), line) {
					t.Errorf("table has no %q line:\n%s", line, out.String())
				}
			}
		})
	}
}

func TestFindingDetails(t *testing.T) {
	_, db := loadTestDB(t)
	img := imageOf(t, languageLayers(t)...)
	inv, err := Index(t.Context(), img, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lodash, log4j *Finding
	fs := Match(inv, db)
	for i := range fs {
		switch {
		case fs[i].Package == "lodash" && fs[i].ID == "GHSA-35jh-r3h4-6jhm":
			lodash = &fs[i]
		case fs[i].ID == "GHSA-jfh8-c2jp-5v3q":
			log4j = &fs[i]
		}
	}
	if lodash == nil || log4j == nil {
		t.Fatal("expected lodash and log4j findings")
	}
	if diff := cmp.Diff([]string{"app/node_modules/lodash/package.json", "app/package-lock.json"}, lodash.Locations); diff != "" {
		t.Errorf("lodash locations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"CVE-2021-23337"}, lodash.Aliases); diff != "" {
		t.Errorf("lodash aliases (-want +got):\n%s", diff)
	}
	if log4j.Severity.Score != 10 || log4j.Severity.Vector == "" {
		t.Errorf("log4j severity = %+v, want CVSS 10.0 from its vector", log4j.Severity)
	}
	if diff := cmp.Diff([]string{"opt/lib/log4j-core-2.14.1.jar", "opt/webapps/app.war"}, log4j.Locations); diff != "" {
		t.Errorf("log4j locations (-want +got):\n%s", diff)
	}
}

func TestRun(t *testing.T) {
	dir, _ := loadTestDB(t)
	debian := writeDockerTar(t, imageOf(t, debianLayers(t)...))
	lang := writeDockerTar(t, imageOf(t, languageLayers(t)...))
	corruptDB := t.TempDir()
	if err := os.MkdirAll(filepath.Join(corruptDB, "osv", "npm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(corruptDB, "osv", "npm", "all.zip"), []byte("not a zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		opts     ScanOptions
		wantCode int
		wantErr  string
	}{
		{"no policy", ScanOptions{Archive: debian}, ExitOK, ""},
		{"unknown counts as critical by default", ScanOptions{Archive: debian, FailOn: "critical"}, ExitPolicy, ""},
		{"unknown ignored", ScanOptions{Archive: debian, FailOn: "low", UnknownSeverity: "unknown"}, ExitOK, ""},
		{"unknown as low under high", ScanOptions{Archive: debian, FailOn: "high", UnknownSeverity: "low"}, ExitOK, ""},
		{"critical npm finding", ScanOptions{Archive: lang, FailOn: "critical", UnknownSeverity: "unknown", Format: "json"}, ExitPolicy, ""},
		{"bad format", ScanOptions{Archive: debian, Format: "xml"}, ExitUsage, "invalid scan options"},
		{"bad fail-on", ScanOptions{Archive: debian, FailOn: "severe"}, ExitUsage, "invalid scan options"},
		{"missing archive", ScanOptions{Archive: dir + "/nope.tar"}, ExitFailed, "scan failed: open"},
		{"missing database", ScanOptions{Archive: debian, VulnDB: t.TempDir()}, ExitFailed, "scan failed: load vulnerability database"},
		{"corrupt database", ScanOptions{Archive: debian, VulnDB: corruptDB}, ExitFailed, "scan failed: load vulnerability database"},
		{"corrupt archive, good database", ScanOptions{Archive: corruptDB + "/osv/npm/all.zip"}, ExitFailed, "scan failed: open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.VulnDB == "" {
				tt.opts.VulnDB = dir
			}
			var out bytes.Buffer
			code, err := Run(t.Context(), tt.opts, &out)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (err %v)", code, tt.wantCode, err)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if err != nil && out.Len() > 0 {
				t.Errorf("stdout written on error: %q", out.String())
			}
		})
	}
}

func TestRunOutput(t *testing.T) {
	dir, _ := loadTestDB(t)
	archive := writeDockerTar(t, imageOf(t, debianLayers(t)...))

	var js bytes.Buffer
	if _, err := Run(t.Context(), ScanOptions{Archive: archive, VulnDB: dir, Format: "json", FailOn: "high"}, &js); err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(js.Bytes(), &r); err != nil {
		t.Fatalf("json output does not parse: %v", err)
	}
	if diff := cmp.Diff(debianWant(), project(r.Findings)); diff != "" {
		t.Errorf("json findings (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(r.DB.Digest, "sha256:") || r.DB.Records == 0 || r.DB.Modified.IsZero() {
		t.Errorf("db info = %+v", r.DB)
	}
	if r.Policy == nil || !r.Policy.Failed || r.Policy.Violations != len(debianWant()) {
		t.Errorf("policy = %+v", r.Policy)
	}
	if len(r.Image.Layers) != 2 {
		t.Errorf("layers = %v", r.Image.Layers)
	}
	// Deterministic: a second run gives the same bytes.
	var again bytes.Buffer
	Run(t.Context(), ScanOptions{Archive: archive, VulnDB: dir, Format: "json", FailOn: "high"}, &again)
	if !bytes.Equal(js.Bytes(), again.Bytes()) {
		t.Error("json output differs between runs")
	}
	// The same with a cache of the database: the run that fills it, and one that reads it,
	// for this image and one with Go, npm, Python and Java packages.
	cache := t.TempDir()
	lang := writeDockerTar(t, imageOf(t, languageLayers(t)...))
	for _, img := range []string{archive, lang} {
		var uncached bytes.Buffer
		if _, err := Run(t.Context(), ScanOptions{Archive: img, VulnDB: dir, Format: "json"}, &uncached); err != nil {
			t.Fatal(err)
		}
		for _, run := range []string{"filling the cache", "from the cache"} {
			var cached bytes.Buffer
			if _, err := Run(t.Context(), ScanOptions{Archive: img, VulnDB: dir, Format: "json", CacheDir: cache}, &cached); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(uncached.Bytes(), cached.Bytes()) {
				t.Errorf("%s: json output %s differs from the output without a cache:\n%s\n%s", img, run, uncached.String(), cached.String())
			}
		}
	}
	if indexes, _ := filepath.Glob(filepath.Join(cache, "vulndb", "*.index")); len(indexes) < 4 {
		t.Errorf("%d indexes cached, want one for each of Debian, npm, Go and PyPI", len(indexes))
	}

	var table bytes.Buffer
	if _, err := Run(t.Context(), ScanOptions{Archive: archive, VulnDB: dir}, &table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Debian GNU/Linux 12 (bookworm) (Debian:12)", "DEBIAN-CVE-2026-103111", "libpcre2-8-0", "pcre2 10.42-1", "5.36.0-7+deb12u4", "findings: 27", "policy: none"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table output lacks %q:\n%s", s, table.String())
		}
	}
}

// countingCache is a LayerCache that counts what it is asked, and round-trips inventories
// through JSON as a persistent store would.
type countingCache struct {
	mu         sync.Mutex
	m          map[LayerKey][]byte
	hits, puts int
}

func (c *countingCache) GetLayer(_ context.Context, h LayerKey) (*inventory.Layer, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[h]
	if !ok {
		return nil, false, nil
	}
	c.hits++
	var l inventory.Layer
	return &l, true, json.Unmarshal(b, &l)
}

func (c *countingCache) PutLayer(_ context.Context, h LayerKey, l *inventory.Layer) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[LayerKey][]byte{}
	}
	c.m[h] = b
	c.puts++
	return nil
}

func TestLayerCache(t *testing.T) {
	_, db := loadTestDB(t)
	layers := debianLayers(t)
	first := imageOf(t, layers...)
	// A second image shares the Debian base layer and adds the Alpine apk database.
	second := imageOf(t, layers[0], alpineLayers(t)[0])
	cache := &countingCache{}
	opts := IndexOptions{Cache: cache}

	inv1, err := Index(t.Context(), first, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cache.puts != 2 || cache.hits != 0 {
		t.Fatalf("after first image: puts=%d hits=%d, want 2, 0", cache.puts, cache.hits)
	}
	if _, err := Index(t.Context(), second, opts); err != nil {
		t.Fatal(err)
	}
	if cache.puts != 3 || cache.hits != 1 {
		t.Fatalf("after second image: puts=%d hits=%d, want 3, 1 (shared base read once)", cache.puts, cache.hits)
	}
	// Re-indexing from the cache alone gives the same inventory and findings.
	inv1again, err := Index(t.Context(), first, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cache.hits != 3 {
		t.Fatalf("re-index: hits=%d, want 3", cache.hits)
	}
	if diff := cmp.Diff(inv1, inv1again); diff != "" {
		t.Errorf("cached inventory differs (-fresh +cached):\n%s", diff)
	}
	if diff := cmp.Diff(debianWant(), project(Match(inv1again, db))); diff != "" {
		t.Errorf("findings from cache (-want +got):\n%s", diff)
	}
	// The merged inventory itself is JSON-serialisable and re-matches the same.
	b, err := json.Marshal(inv1)
	if err != nil {
		t.Fatal(err)
	}
	var stored inventory.Image
	if err := json.Unmarshal(b, &stored); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(debianWant(), project(Match(&stored, db))); diff != "" {
		t.Errorf("findings from stored image inventory (-want +got):\n%s", diff)
	}
}

// keepTB is a testing.TB whose TempDir outlives the test (for fixtures shared by tests).
type keepTB struct{ testing.TB }

func (k *keepTB) TempDir() string {
	d, err := osMkdirTemp()
	if err != nil {
		k.Fatal(err)
	}
	return d
}
