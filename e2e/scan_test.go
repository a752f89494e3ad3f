package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const sharedVulnDB = "../../shared/vulndb"

type scanReport struct {
	Packages int `json:"packages"`
	Findings []struct {
		ID      string `json:"id"`
		Package string `json:"package"`
		Version string `json:"version"`
	} `json:"findings"`
	Unchecked []struct {
		Ecosystem string `json:"ecosystem"`
		Type      string `json:"type"`
		Packages  int    `json:"packages"`
	} `json:"unchecked"`
}

func (r scanReport) ids() []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.ID)
	}
	sort.Strings(out)
	return out
}

// TestScanOnPush imports the offline OSV database, pushes a Debian image
// with crane, and reads the report and the CycloneDX SBOM the registry
// stored as referrers; the offline CLI finds the same on the same image.
func TestScanOnPush(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{})
	out := run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	if !strings.Contains(out, "Debian") {
		t.Fatalf("vulndb import: %s", out)
	}

	layer := debianLayer(t)
	// The database is picked up within seconds; push once it is loaded.
	dbLoaded(t, reg)
	run(t, nil, crane, "append", "--insecure", "-f", layer, "-t", reg.Addr+"/team/deb:va")
	d := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/deb:va"))
	_, report := waitReport(t, reg, "team/deb", d, 60*time.Second)
	if report.Packages == 0 || len(report.Findings) == 0 {
		t.Fatalf("report: %d packages, %d findings", report.Packages, len(report.Findings))
	}
	var perl bool
	for _, f := range report.Findings {
		perl = perl || strings.HasPrefix(f.Package, "perl")
	}
	if !perl {
		t.Errorf("no finding for perl (matched by source package): %v", report.ids())
	}
	// "Vulnerable images now": this one image, under its worst severity;
	// the database's age is known.
	vulnerable := 0.0
	for _, sev := range []string{"critical", "high", "medium", "low", "unknown"} {
		vulnerable += metric(t, reg, `portcullis_scan_vulnerable_images{severity="`+sev+`"}`)
	}
	if vulnerable != 1 {
		t.Errorf("portcullis_scan_vulnerable_images sums to %v, want 1", vulnerable)
	}
	if age := metric(t, reg, "portcullis_scan_db_age_seconds"); age <= 0 || math.IsInf(age, 1) {
		t.Errorf("portcullis_scan_db_age_seconds %v with a database loaded", age)
	}

	resp, err := http.Get(reg.URL() + "/api/v1/repositories/team/deb/manifests/" + d + "/sbom")
	if err != nil {
		t.Fatal(err)
	}
	var sbom struct {
		BOMFormat  string `json:"bomFormat"`
		Components []struct {
			Purl string `json:"purl"`
		} `json:"components"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&sbom)
	resp.Body.Close()
	debs := 0
	for _, c := range sbom.Components {
		if strings.HasPrefix(c.Purl, "pkg:deb/debian/") {
			debs++
		}
	}
	if sbom.BOMFormat != "CycloneDX" || debs != report.Packages {
		t.Errorf("sbom: %s with %d deb components of %d (report: %d packages)", sbom.BOMFormat, debs, len(sbom.Components), report.Packages)
	}

	// The offline CLI on the same image and database finds the same.
	tarPath := filepath.Join(t.TempDir(), "image.tar")
	run(t, nil, crane, "pull", "--insecure", reg.Addr+"/team/deb@"+d, tarPath)
	cmd := exec.Command(registryBin, "scan", "--archive", tarPath, "--vulndb", sharedVulnDB, "--format", "json", "--fail-on", "critical")
	cli, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 1) {
		t.Fatalf("registry scan: %v", err)
	}
	var offline scanReport
	if err := json.Unmarshal(cli, &offline); err != nil {
		t.Fatalf("registry scan output: %v", err)
	}
	if strings.Join(offline.ids(), ",") != strings.Join(report.ids(), ",") {
		t.Errorf("offline scan %v\nserver scan %v", offline.ids(), report.ids())
	}
}

// TestScanRematch: scan with a database that knows nothing of Debian, then
// import one that does: the image gets a new report with findings, without
// being pushed again.
func TestScanRematch(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{})
	v1 := t.TempDir()
	if err := os.MkdirAll(filepath.Join(v1, "osv", "Alpine"), 0o755); err != nil {
		t.Fatal(err)
	}
	alpine, err := os.ReadFile(filepath.Join(sharedVulnDB, "osv", "Alpine", "all.zip"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v1, "osv", "Alpine", "all.zip"), string(alpine))
	run(t, nil, registryBin, "vulndb", "import", v1, "--data", reg.DataDir)

	layer := debianLayer(t)
	report := func(d string) (scanReport, bool) {
		resp, err := http.Get(reg.URL() + "/api/v1/repositories/team/rematch/manifests/" + d + "/vulnerabilities")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r scanReport
		return r, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&r) == nil
	}
	dbLoaded(t, reg)
	run(t, nil, crane, "append", "--insecure", "-f", layer, "-t", reg.Addr+"/team/rematch:ta")
	d := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/rematch:ta"))
	if _, r := waitReport(t, reg, "team/rematch", d, 60*time.Second); len(r.Findings) != 0 {
		t.Fatalf("findings with a database without Debian records: %v", r.ids())
	}
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	if !eventually(90*time.Second, func() bool { r, ok := report(d); return ok && len(r.Findings) > 0 }) {
		t.Fatalf("the report did not change after a new database\n%s", reg.Logs())
	}
}

// TestScanEnforce: in an enforce repository a tag push is scanned at once;
// an image with findings above the gate is refused with the worst findings
// named, a clean image and an allowlisted one are accepted.
func TestScanEnforce(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{config: `version: 1
scan:
  policies:
    - name: strict
      repositories: ["strict/**"]
      mode: enforce
      maxSeverity: none
    - name: waived
      repositories: ["waived/**"]
      mode: enforce
      maxSeverity: high
      unknownSeverity: unknown
`})
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	layer := debianLayer(t)
	clean := filepath.Join(t.TempDir(), "clean.tar")
	writeFile(t, clean, string(tarOf(t, map[string]string{"hello.txt": "no packages here"})))

	// Until the database is loaded, enforce refuses every tag (fail
	// closed); once it is, the push is scanned at once.
	dbLoaded(t, reg)
	out, err := runErr(nil, crane, "append", "--insecure", "-f", layer, "-t", reg.Addr+"/strict/deb:v1")
	if err == nil || !strings.Contains(out, "vulnerability policy") {
		t.Fatalf("vulnerable image in an enforce repository: %v\n%s", err, out)
	}
	if !strings.Contains(out, "DENIED") || !strings.Contains(out, "DEBIAN-CVE") {
		t.Errorf("refusal does not name the findings:\n%s", out)
	}
	run(t, nil, crane, "append", "--insecure", "-f", clean, "-t", reg.Addr+"/strict/clean:v1")
	run(t, nil, crane, "append", "--insecure", "-f", layer, "-t", reg.Addr+"/waived/deb:v1")
}

// TestScanFailed: an image whose layer claims gzip but is garbage gets the
// verdict "scan failed" with the reason, and the registry keeps serving.
func TestScanFailed(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t, startOptions{})
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("this is not a gzip stream"), types.DockerLayer))
	if err != nil {
		t.Fatal(err)
	}
	d := imageDigest(t, img)
	dbLoaded(t, reg)
	if err := remote.Write(ref(t, reg.Addr+"/bad/layer:t0"), img); err != nil {
		t.Fatal(err)
	}
	var body struct{ Verdict, Reason string }
	code := 0
	failed := eventually(60*time.Second, func() bool {
		resp, err := http.Get(reg.URL() + "/api/v1/repositories/bad/layer/manifests/" + d + "/vulnerabilities")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		code = resp.StatusCode
		return code == http.StatusUnprocessableEntity && json.NewDecoder(resp.Body).Decode(&body) == nil
	})
	if !failed {
		t.Fatalf("no scan-failed verdict: %d\n%s", code, reg.Logs())
	}
	if body.Verdict != "scan failed" || !strings.HasPrefix(body.Reason, "scan failed") {
		t.Errorf("verdict %+v", body)
	}
	if resp, err := http.Get(reg.URL() + "/v2/"); err != nil || resp.StatusCode != 200 {
		t.Errorf("registry after a failed scan: %v", err)
	}
}

// TestScanQuarantine: pushes are accepted; bob's pulls wait for the scan,
// then pass for a clean image and stay refused for a vulnerable one; the
// pusher can always pull.
func TestScanQuarantine(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{config: "version: 1\n" + aliceAndBob(t) + `scan:
  policies:
    - name: held
      repositories: ["held/**"]
      mode: quarantine
      maxSeverity: none
`})
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	aliceEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	bobEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, aliceEnv, crane, "auth", "login", "--insecure", reg.Addr, "-u", "alice", "-p", "alice-pw")
	run(t, bobEnv, crane, "auth", "login", "--insecure", reg.Addr, "-u", "bob", "-p", "bob-pw")
	dbLoaded(t, reg)

	vulnerable := debianLayer(t)
	clean := filepath.Join(t.TempDir(), "clean.tar")
	writeFile(t, clean, string(tarOf(t, map[string]string{"hello.txt": "nothing installed"})))
	run(t, aliceEnv, crane, "append", "--insecure", "-f", vulnerable, "-t", reg.Addr+"/held/deb:v1")
	run(t, aliceEnv, crane, "append", "--insecure", "-f", clean, "-t", reg.Addr+"/held/clean:v1")
	run(t, aliceEnv, crane, "manifest", "--insecure", reg.Addr+"/held/deb:v1") // the pusher may

	var err error
	if !eventually(60*time.Second, func() bool {
		_, err = runErr(bobEnv, crane, "manifest", "--insecure", reg.Addr+"/held/clean:v1")
		return err == nil
	}) {
		t.Fatalf("bob never got the clean image: %v", err)
	}
	// The two scans may finish in either order: wait out "awaiting its
	// vulnerability scan" as a client does.
	var out string
	eventually(60*time.Second, func() bool {
		out, err = runErr(bobEnv, crane, "manifest", "--insecure", reg.Addr+"/held/deb:v1")
		return err == nil || !strings.Contains(out, "awaiting its vulnerability scan")
	})
	if err == nil || !strings.Contains(out, "quarantined") || !strings.Contains(out, "vulnerability policy") {
		t.Errorf("bob pulled the vulnerable image or got another reason: %v\n%s", err, out)
	}
}

// debianLayer writes a layer with a Debian 12 package database whose
// packages the shared OSV records cover, and returns its path.
func debianLayer(t *testing.T) string {
	t.Helper()
	status, err := os.ReadFile("../scan/testdata/images/debian-status")
	if err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(t.TempDir(), "layer.tar")
	writeFile(t, layer, string(tarOf(t, map[string]string{
		"var/lib/dpkg/status": string(status),
		"etc/os-release":      "ID=debian\nVERSION_ID=\"12\"\n",
	})))
	return layer
}

// TestScanOutboxSurvivesCrash: pushes made before any database is imported
// are kept in the durable outbox across a crash (kill -9) and scanned after
// the restart. They are pushed by digest, so no tag walk could find them:
// only the outbox can. An index's images are scanned, not the index.
func TestScanOutboxSurvivesCrash(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{})
	data := reg.DataDir

	deb := imageOf(t, map[string]string{
		"var/lib/dpkg/status": debianStatus(t),
		"etc/os-release":      "ID=debian\nVERSION_ID=\"12\"\n",
	})
	tarPath := filepath.Join(t.TempDir(), "deb.tar")
	writeTarball(t, tarPath, deb)
	d := imageDigest(t, deb)
	run(t, nil, crane, "push", "--insecure", tarPath, reg.Addr+"/team/later@"+d)

	clean := imageOf(t, map[string]string{"hello.txt": "no packages"})
	other := imageOf(t, map[string]string{"var/lib/dpkg/status": debianStatus(t), "etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n", "x": "y"})
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: clean, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref(t, reg.Addr+"/team/multi@"+idxDigest.String()), idx); err != nil {
		t.Fatal(err)
	}

	// The pushes are recorded for the scanner, which waits for a database.
	waitMetric(t, reg, "portcullis_scan_outbox_pending", 2)
	if code, _ := getReport(t, reg, "team/later", d); code != http.StatusNotFound {
		t.Fatalf("report before any database: %d, want 404", code)
	}
	if n := metric(t, reg, "portcullis_scan_outbox_pending"); n < 2 {
		t.Errorf("outbox pending %v before a database, want the image, the index (and its images)", n)
	}
	reg.kill(t)

	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", data)
	reg = startRegistry(t, startOptions{dataDir: data})
	waitReport(t, reg, "team/later", d, 60*time.Second)
	waitReport(t, reg, "team/multi", imageDigest(t, clean), 60*time.Second)
	_, r := waitReport(t, reg, "team/multi", imageDigest(t, other), 60*time.Second)
	if len(r.Findings) == 0 {
		t.Error("the index's Debian image has no findings")
	}
	if code, _ := getReport(t, reg, "team/multi", idxDigest.String()); code != http.StatusNotFound {
		t.Errorf("the index itself got a report: %d", code)
	}
	waitMetric(t, reg, "portcullis_scan_outbox_pending", 0)
	if n := reportCount(t, reg, "team/later", d); n != 1 {
		t.Errorf("%d reports for the image, want 1", n)
	}
}

// TestScanReconcileAfterMetadataLoss deletes the metadata database between
// runs. The reconcile pass scans a tagged image and an untagged one whose
// queued scans were lost with it, and scans nothing twice: a scanned image
// keeps its report, and when a new database was imported meanwhile it is
// re-matched from the inventory stored next to its report, without being
// scanned again.
func TestScanReconcileAfterMetadataLoss(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	layer := debianLayer(t)
	reg := startRegistry(t, startOptions{})
	data := reg.DataDir
	// Pushed before any database: queued in the outbox, which is lost below.
	run(t, nil, crane, "append", "--insecure", "-f", layer, "-t", reg.Addr+"/team/lost:v1")
	lost := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/lost:v1"))
	untaggedImg := imageOf(t, map[string]string{
		"var/lib/dpkg/status": debianStatus(t),
		"etc/os-release":      "ID=debian\nVERSION_ID=\"12\"\n",
		"untagged":            "yes",
	})
	tarPath := filepath.Join(t.TempDir(), "untagged.tar")
	writeTarball(t, tarPath, untaggedImg)
	untagged := imageDigest(t, untaggedImg)
	run(t, nil, crane, "push", "--insecure", tarPath, reg.Addr+"/team/untagged@"+untagged)
	if err := reg.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, reg.Logs())
	}
	// A database without the Debian records: the Debian images have no
	// findings yet.
	run(t, nil, registryBin, "vulndb", "import", bundleWithout(t, "Debian"), "--data", data)
	removeMetadata(t, data)

	reg = startRegistry(t, startOptions{dataDir: data})
	for _, img := range []struct{ repo, d string }{{"team/lost", lost}, {"team/untagged", untagged}} {
		if _, r := waitReport(t, reg, img.repo, img.d, 60*time.Second); len(r.Findings) != 0 {
			t.Fatalf("%s: findings with a database without Debian records: %v", img.repo, r.ids())
		}
	}
	if n := metric(t, reg, "portcullis_scan_reconcile_enqueued_total"); n != 2 {
		t.Errorf("reconcile queued %v images, want 2", n)
	}
	clean := filepath.Join(t.TempDir(), "clean.tar")
	writeFile(t, clean, string(tarOf(t, map[string]string{"hello.txt": "nothing installed"})))
	run(t, nil, crane, "append", "--insecure", "-f", clean, "-t", reg.Addr+"/team/pushed:v1")
	pushed := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/pushed:v1"))
	waitReport(t, reg, "team/pushed", pushed, 60*time.Second)
	if err := reg.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, reg.Logs())
	}
	// The whole bundle, with the Debian records, and no metadata database:
	// nothing remembers the scanned images' inventories but storage.
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", data)
	removeMetadata(t, data)

	reg = startRegistry(t, startOptions{dataDir: data})
	waitMetric(t, reg, "portcullis_scan_reconcile_runs_total", 1)
	if n := metric(t, reg, "portcullis_scan_reconcile_enqueued_total"); n != 0 {
		t.Errorf("reconcile queued %v images that have reports", n)
	}
	if n := metric(t, reg, `portcullis_scan_scans_total{result="ok"}`); n != 0 {
		t.Errorf("%v scans after a restart with every image scanned", n)
	}
	if n := metric(t, reg, "portcullis_scan_restored_inventories_total"); n != 3 {
		t.Errorf("%v inventories read back from storage, want 3", n)
	}
	for repo, d := range map[string]string{"team/lost": lost, "team/untagged": untagged} {
		if code, r := getReport(t, reg, repo, d); code != http.StatusOK || len(r.Findings) == 0 {
			t.Errorf("%s@%s: report %d with %d findings after the Debian records were imported", repo, d, code, len(r.Findings))
		}
		if n := reportCount(t, reg, repo, d); n != 2 {
			t.Errorf("%s@%s has %d reports, want 2 (the first, the re-matched one)", repo, d, n)
		}
	}
	if n := reportCount(t, reg, "team/pushed", pushed); n != 1 {
		t.Errorf("the clean image has %d reports, want 1: its findings did not change", n)
	}
}

// bundleWithout returns a copy of the shared OSV bundle without one
// ecosystem's records.
func bundleWithout(t *testing.T, ecosystem string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(filepath.Join(sharedVulnDB, "osv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == ecosystem {
			continue
		}
		zip, err := os.ReadFile(filepath.Join(sharedVulnDB, "osv", e.Name(), "all.zip"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "osv", e.Name()), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "osv", e.Name(), "all.zip"), string(zip))
	}
	return dir
}

// kill stops the registry with SIGKILL, as a crash would.
func (r *Registry) kill(t *testing.T) {
	t.Helper()
	r.stopped = true
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
}

// removeMetadata deletes the node's metadata database (bbolt) of a
// stopped registry.
func removeMetadata(t *testing.T, dataDir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dataDir, "portcullis.db")); err != nil {
		t.Fatal(err)
	}
}

func debianStatus(t *testing.T) string {
	t.Helper()
	status, err := os.ReadFile("../scan/testdata/images/debian-status")
	if err != nil {
		t.Fatal(err)
	}
	return string(status)
}

// imageOf returns an image of one layer holding files.
func imageOf(t *testing.T, files map[string]string) v1.Image {
	t.Helper()
	data := tarOf(t, files)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// getReport returns the status of GET .../vulnerabilities for repo@d and
// the report when it is 200.
func getReport(t *testing.T, reg *Registry, repo, d string) (int, scanReport) {
	t.Helper()
	resp, err := http.Get(reg.URL() + "/api/v1/repositories/" + repo + "/manifests/" + d + "/vulnerabilities")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r scanReport
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, r
}

func waitReport(t *testing.T, reg *Registry, repo, d string, timeout time.Duration) (int, scanReport) {
	t.Helper()
	var code int
	var r scanReport
	if !eventually(timeout, func() bool { code, r = getReport(t, reg, repo, d); return code == http.StatusOK }) {
		t.Fatalf("no report for %s@%s after %v (last %d)\n%s", repo, d, timeout, code, reg.Logs())
	}
	return code, r
}

// eventually polls cond until it holds or timeout passes, and reports
// whether it held: what the tests wait for is the registry's work, which
// runs in another process.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return true
}

// dbLoaded waits until the registry has loaded a vulnerability database:
// its first reconcile pass, which starts once a database is loaded, is
// done.
func dbLoaded(t *testing.T, reg *Registry) {
	t.Helper()
	waitMetric(t, reg, "portcullis_scan_reconcile_runs_total", 1)
}

// reportCount counts repo@d's scan reports through the referrers API.
func reportCount(t *testing.T, reg *Registry, repo, d string) int {
	t.Helper()
	return len(reportDigests(t, reg.URL(), repo, d))
}

// reportDigests lists the digests of repo@d's scan reports at base, through
// the referrers API.
func reportDigests(t *testing.T, base, repo, d string) []string {
	t.Helper()
	resp, err := http.Get(base + "/v2/" + repo + "/referrers/" + d + "?artifactType=application/vnd.portcullis.scan.report.v1%2Bjson")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx struct {
		Manifests []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		t.Fatalf("referrers of %s@%s: %v", repo, d, err)
	}
	var out []string
	for _, m := range idx.Manifests {
		if m.ArtifactType == "application/vnd.portcullis.scan.report.v1+json" {
			out = append(out, m.Digest)
		}
	}
	return out
}

// metric returns a sample's value from /metrics (0 when absent); name
// includes its labels as printed.
func metric(t *testing.T, reg *Registry, name string) float64 {
	t.Helper()
	return sampleOf(t, scrapeMetrics(t, reg), name)
}

// metricAs is metric scraped with user's basic credentials.
func metricAs(t *testing.T, reg *Registry, user, pw, name string) float64 {
	t.Helper()
	return sampleOf(t, scrapeMetricsAs(t, reg, user, pw), name)
}

// waitMetric waits until a metric reaches want (counters: at least want;
// want 0: exactly 0).
func waitMetric(t *testing.T, reg *Registry, name string, want float64) {
	t.Helper()
	waitMetricAs(t, reg, "alice", "alice-pw", name, want)
}

// waitMetricAs is waitMetric scraped with user's basic credentials.
func waitMetricAs(t *testing.T, reg *Registry, user, pw, name string, want float64) {
	t.Helper()
	var got float64
	if !eventually(60*time.Second, func() bool {
		got = metricAs(t, reg, user, pw, name)
		return (want == 0 && got == 0) || (want > 0 && got >= want)
	}) {
		t.Fatalf("%s is %v after 60s, want %v\n%s", name, got, want, reg.Logs())
	}
}

// TestScanRpmOnPush pushes a Rocky Linux 9 image with crane (an rpm sqlite database
// written by rpm itself) to a registry whose database holds Rocky Linux records, and
// reads the exact findings from the report the server stored: epochs compared, binary
// package names matched, another release's entry left out.
func TestScanRpmOnPush(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{})

	importTestRecords(t, reg, "Rocky Linux")

	db, err := os.ReadFile("../scan/inventory/testdata/rpm/rpmdb.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(t.TempDir(), "layer.tar")
	writeFile(t, layer, string(tarOf(t, map[string]string{
		"etc/os-release":           "NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"9.2\"\nPRETTY_NAME=\"Rocky Linux 9.2 (Blue Onyx)\"\n",
		"var/lib/rpm/rpmdb.sqlite": string(db),
	})))
	run(t, nil, crane, "append", "--insecure", "-f", layer, "-t", reg.Addr+"/team/rocky:9")
	d := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/rocky:9"))
	status, report := waitReport(t, reg, "team/rocky", d, 60*time.Second)
	if status != http.StatusOK {
		t.Fatalf("no report for team/rocky@%s (status %d)\n%s", d, status, reg.Logs())
	}
	got := report.findingLines()
	want := []string{
		"glibc 2.34-60.el9 RLSA-TEST-0002",
		"glibc-common 2.34-60.el9 RLSA-TEST-0002",
		"glibc-minimal-langpack 2.34-60.el9 RLSA-TEST-0002",
		"openssl 1:3.0.7-27.el9 RLSA-TEST-0001",
		"openssl-libs 1:3.0.7-27.el9 RLSA-TEST-0001",
		"perl-Carp 1.50-481.el9 RLSA-TEST-0005",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if report.Packages != 12 {
		t.Errorf("report lists %d packages, want the 12 of the rpm database", report.Packages)
	}
}

// TestScanUbuntuAndUnchecked: with a bundle of Ubuntu records filed as
// osv.dev files them ("Ubuntu:22.04:LTS"), an Ubuntu 22.04 image pushed with
// crane gets exactly its findings; a Fedora image, whose rpm packages no OSV
// ecosystem covers, gets a report that says its packages were not checked.
func TestScanUbuntuAndUnchecked(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	reg := startRegistry(t, startOptions{config: `version: 1
scan:
  policies:
    - name: covered
      repositories: ["covered/**"]
      mode: enforce
      maxSeverity: critical
      failOnUnchecked: true
`})
	importTestRecords(t, reg, "Ubuntu")
	status, err := os.ReadFile("../scan/testdata/images/ubuntu-status")
	if err != nil {
		t.Fatal(err)
	}
	rpmdb, err := os.ReadFile("../scan/inventory/testdata/rpm/rpmdb.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	ubuntu := filepath.Join(t.TempDir(), "ubuntu.tar")
	writeFile(t, ubuntu, string(tarOf(t, map[string]string{
		"etc/os-release":      "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n",
		"var/lib/dpkg/status": string(status),
	})))
	fedora := filepath.Join(t.TempDir(), "fedora.tar")
	writeFile(t, fedora, string(tarOf(t, map[string]string{
		"etc/os-release":           "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\nPRETTY_NAME=\"Fedora Linux 40\"\n",
		"var/lib/rpm/rpmdb.sqlite": string(rpmdb),
	})))

	run(t, nil, crane, "append", "--insecure", "-f", ubuntu, "-t", reg.Addr+"/team/ubuntu:22.04")
	d := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/ubuntu:22.04"))
	_, report := waitReport(t, reg, "team/ubuntu", d, 60*time.Second)
	got := report.findingLines()
	want := []string{
		"libssl3 3.0.2-0ubuntu1.8 UBUNTU-TEST-0001",
		"openssl 3.0.2-0ubuntu1.8 UBUNTU-TEST-0001",
		"zlib1g 1:1.2.11.dfsg-2ubuntu9.2 UBUNTU-TEST-0005",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ubuntu findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(report.Unchecked) != 0 {
		t.Errorf("ubuntu: unchecked %+v, want none", report.Unchecked)
	}

	run(t, nil, crane, "append", "--insecure", "-f", fedora, "-t", reg.Addr+"/team/fedora:40")
	d = strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", reg.Addr+"/team/fedora:40"))
	_, report = waitReport(t, reg, "team/fedora", d, 60*time.Second)
	if len(report.Findings) != 0 || len(report.Unchecked) != 1 || report.Unchecked[0].Type != "rpm" ||
		report.Unchecked[0].Packages != 12 || report.Unchecked[0].Ecosystem != "" {
		t.Errorf("fedora: %d findings, unchecked %+v; want none and the 12 rpm packages", len(report.Findings), report.Unchecked)
	}

	// A policy with failOnUnchecked refuses the Fedora image at the tag push,
	// and takes the Ubuntu one, whose packages were all checked.
	out, err := runErr(nil, crane, "append", "--insecure", "-f", fedora, "-t", reg.Addr+"/covered/fedora:40")
	if err == nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "packages not checked: 12 rpm packages") {
		t.Errorf("fedora in a failOnUnchecked repository: %v\n%s", err, out)
	}
	run(t, nil, crane, "append", "--insecure", "-f", ubuntu, "-t", reg.Addr+"/covered/ubuntu:22.04")
}

// importTestRecords imports, into reg's data directory, a bundle of the scan
// package's test records of one ecosystem (scan/testdata/osv-extra).
func importTestRecords(t *testing.T, reg *Registry, ecosystem string) {
	t.Helper()
	bundle := t.TempDir()
	zipRecords(t, filepath.Join("../scan/testdata/osv-extra", ecosystem), filepath.Join(bundle, "osv", ecosystem, "all.zip"))
	if out := run(t, nil, registryBin, "vulndb", "import", bundle, "--data", reg.DataDir); !strings.Contains(out, ecosystem) {
		t.Fatalf("vulndb import: %s", out)
	}
}

// findingLines lists the report's findings as "package version id", sorted.
func (r scanReport) findingLines() []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.Package+" "+f.Version+" "+f.ID)
	}
	sort.Strings(out)
	return out
}

// zipRecords packs the OSV records (*.json) of dir into an all.zip at dst.
func zipRecords(t *testing.T, dir, dst string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("records in %s: %v", dir, err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range paths {
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.Create(filepath.Base(p))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, buf.String())
}
