package e2e

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestAdmissionWebhooks pushes tags through webhooks that allow, deny, time
// out and answer garbage, over plain HTTP and TLS with a CA file.
func TestAdmissionWebhooks(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	var mu sync.Mutex
	var reviews []map[string]any
	record := func(r *http.Request) {
		var rv map[string]any
		_ = json.NewDecoder(r.Body).Decode(&rv)
		mu.Lock()
		reviews = append(reviews, rv)
		mu.Unlock()
	}
	allow := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(r)
		fmt.Fprint(w, `{"allowed":true,"reason":"ok"}`)
	}))
	defer allow.Close()
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(r)
		fmt.Fprint(w, `{"allowed":false,"reason":"image lacks the team label"}`)
	}))
	defer deny.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		fmt.Fprint(w, `{"allowed":true}`)
	}))
	defer slow.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html>proxy error</html>`)
	}))
	defer garbage.Close()

	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: allow.Certificate().Raw})))
	cfg := fmt.Sprintf(`version: 1
admission:
  webhooks:
    - name: tls-allow
      url: %s
      caFile: %s
      repositories: ["ok/**", "denied/**"]
    - name: policy-bot
      url: %s
      repositories: ["denied/**"]
    - name: slowpoke
      url: %s
      timeout: 1s
      repositories: ["slow/**"]
    - name: lenient
      url: %s
      timeout: 1s
      failurePolicy: ignore
      repositories: ["lenient/**"]
    - name: broken
      url: %s
      repositories: ["garbage/**"]
`, allow.URL, ca, deny.URL, slow.URL, slow.URL, garbage.URL)
	reg := startRegistry(t, startOptions{config: cfg})
	img, _ := random.Image(1024, 1)
	tarPath := filepath.Join(dir, "img.tar")
	writeTarball(t, tarPath, img)
	push := func(repo string) (string, error) {
		return runErr(nil, crane, "push", "--insecure", tarPath, reg.Addr+"/"+repo+":v1")
	}

	if out, err := push("ok/app"); err != nil {
		t.Errorf("allowed push: %v\n%s", err, out)
	}
	if out, err := push("denied/app"); err == nil || !strings.Contains(out, "denied by admission webhook policy-bot: image lacks the team label") {
		t.Errorf("denied push: %v\n%s", err, out)
	}
	if out, err := push("slow/app"); err == nil || !strings.Contains(out, "slowpoke") {
		t.Errorf("timed-out webhook (fail closed): %v\n%s", err, out)
	}
	if out, err := push("lenient/app"); err != nil {
		t.Errorf("timed-out webhook with failurePolicy ignore: %v\n%s", err, out)
	}
	if out, err := push("garbage/app"); err == nil || !strings.Contains(out, "broken") {
		t.Errorf("garbage-answering webhook: %v\n%s", err, out)
	}
	// Repositories no webhook covers are not reviewed; denied tags were not stored.
	if out, err := push("free/app"); err != nil {
		t.Errorf("unreviewed push: %v\n%s", err, out)
	}
	if out, err := runErr(nil, crane, "digest", "--insecure", reg.Addr+"/denied/app:v1"); err == nil {
		t.Errorf("a denied tag exists: %s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	var sawReview bool
	for _, rv := range reviews {
		if rv["repository"] == "ok/app" && rv["tag"] == "v1" && rv["digest"] == imageDigest(t, img) &&
			rv["apiVersion"] == "admission.portcullis/v1" {
			sawReview = true
			// No database was imported: the review says so.
			if sc, _ := rv["scan"].(map[string]any); sc["status"] != "not-scanned" || sc["reason"] == "" {
				t.Errorf("scan object without a database: %v", rv["scan"])
			}
		}
	}
	if !sawReview {
		t.Errorf("no review of ok/app:v1 with its digest among %v", reviews)
	}
}

// scanReview is the part of a webhook review the scan tests read.
type scanReview struct {
	APIVersion string `json:"apiVersion"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	Scan       *struct {
		Status   string `json:"status"`
		Reason   string `json:"reason"`
		Database *struct {
			Digest string `json:"digest"`
		} `json:"database"`
		Counts        *severityCounts `json:"counts"`
		WorstSeverity string          `json:"worstSeverity"`
		Policy        *struct {
			Name        string `json:"name"`
			Mode        string `json:"mode"`
			Passed      bool   `json:"passed"`
			MaxSeverity string `json:"maxSeverity"`
		} `json:"policy"`
		Findings []struct {
			ID       string `json:"id"`
			Package  string `json:"package"`
			Version  string `json:"version"`
			Severity string `json:"severity"`
		} `json:"findings"`
	} `json:"scan"`
}

type severityCounts struct {
	Critical int `json:"critical"`
	High     int `json:"high"`
	Medium   int `json:"medium"`
	Low      int `json:"low"`
	Unknown  int `json:"unknown"`
}

func (c severityCounts) total() int { return c.Critical + c.High + c.Medium + c.Low + c.Unknown }

// TestWebhookScanSummary: the webhook review carries the image's
// vulnerability scan. A webhook that refuses critical or unrated findings
// refuses the vulnerable Debian fixture, scanned at the tag push in an
// enforce repository or earlier after a push by digest, and the client
// gets its reason in the 403; a clean image passes; an image not scanned
// yet, or before any database, is reviewed as such.
func TestWebhookScanSummary(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	reviews := map[string]scanReview{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rv scanReview
		if err := json.NewDecoder(r.Body).Decode(&rv); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		reviews[rv.Repository+":"+rv.Tag] = rv
		mu.Unlock()
		if sc := rv.Scan; sc != nil && sc.Counts != nil && sc.Counts.Critical+sc.Counts.Unknown > 0 {
			fmt.Fprintf(w, `{"apiVersion":"admission.portcullis/v1","allowed":false,"reason":"%d critical and %d unrated vulnerabilities"}`,
				sc.Counts.Critical, sc.Counts.Unknown)
			return
		}
		fmt.Fprint(w, `{"allowed":true,"reason":"no critical or unrated vulnerability"}`)
	}))
	defer hook.Close()
	reg := startRegistry(t, startOptions{config: fmt.Sprintf(`version: 1
admission:
  webhooks:
    - name: vuln-gate
      url: %s
      repositories: ["sync/**", "stored/**"]
scan:
  policies:
    - name: sync
      repositories: ["sync/**"]
      mode: enforce
      maxSeverity: critical
      unknownSeverity: unknown
`, hook.URL)})
	review := func(repo, tag string) scanReview {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		rv, ok := reviews[repo+":"+tag]
		if !ok || rv.Scan == nil {
			t.Fatalf("no review of %s:%s with a scan object", repo, tag)
		}
		if rv.APIVersion != "admission.portcullis/v1" {
			t.Errorf("apiVersion %q", rv.APIVersion)
		}
		return rv
	}
	// refused checks a 403 DENIED with the webhook's reason, which names
	// the counts of the review of repo:tag.
	refused := func(err error, repo, tag string) {
		t.Helper()
		c := review(repo, tag).Scan.Counts
		if c == nil {
			t.Fatalf("%s:%v refused (%v) without counts in its review", repo, tag, err)
		}
		reason := fmt.Sprintf("DENIED: denied by admission webhook vuln-gate: %d critical and %d unrated vulnerabilities", c.Critical, c.Unknown)
		var terr *transport.Error
		if !errorsAs(err, &terr) || terr.StatusCode != http.StatusForbidden || !strings.Contains(err.Error(), reason) {
			t.Fatalf("push of %s:%s: %v, want 403 with %q", repo, tag, err, reason)
		}
	}
	deb := imageOf(t, map[string]string{
		"var/lib/dpkg/status": debianStatus(t),
		"etc/os-release":      "ID=debian\nVERSION_ID=\"12\"\n",
	})
	clean := imageOf(t, map[string]string{"hello.txt": "no packages here"})

	// Before any database: not scanned, and the webhook decides without.
	if err := remote.Write(ref(t, reg.Addr+"/stored/early:v1"), clean); err != nil {
		t.Fatalf("push before a database: %v", err)
	}
	if sc := review("stored/early", "v1").Scan; sc.Status != "not-scanned" || !strings.Contains(sc.Reason, "database") || sc.Counts != nil {
		t.Errorf("scan before a database: %+v", sc)
	}

	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	// Enforce scans at the tag push; until the database is loaded it
	// refuses by itself, then the webhook refuses on the scan.
	deadline := time.Now().Add(60 * time.Second)
	var err error
	for {
		err = remote.Write(ref(t, reg.Addr+"/sync/deb:v1"), deb)
		if err != nil && strings.Contains(err.Error(), "admission webhook") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vulnerable image was not refused by the webhook: %v\n%s", err, reg.Logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
	refused(err, "sync/deb", "v1")
	atPush := review("sync/deb", "v1").Scan
	if atPush.Status != "scanned" || atPush.Database == nil || atPush.Database.Digest == "" || atPush.Counts == nil ||
		atPush.Counts.Critical+atPush.Counts.Unknown == 0 || atPush.WorstSeverity == "none" {
		t.Fatalf("scan at the tag push: %+v", atPush)
	}
	if p := atPush.Policy; p == nil || p.Name != "sync" || p.Mode != "enforce" || !p.Passed || p.MaxSeverity != "critical" {
		t.Errorf("policy result %+v", atPush.Policy)
	}
	if n, total := len(atPush.Findings), atPush.Counts.total(); n != min(total, 20) {
		t.Errorf("%d findings listed of %d, want the 20 worst", n, total)
	}
	if err := remote.Write(ref(t, reg.Addr+"/sync/clean:v1"), clean); err != nil {
		t.Errorf("clean image in an enforce repository: %v", err)
	}
	if sc := review("sync/clean", "v1").Scan; sc.Status != "scanned" || sc.Counts == nil || sc.Counts.total() != 0 ||
		sc.WorstSeverity != "none" || len(sc.Findings) != 0 {
		t.Errorf("clean image's scan: %+v", sc)
	}

	// Pushed by digest (no review), scanned on push, then tagged: the
	// review carries the stored report.
	d := imageDigest(t, deb)
	if err := remote.Write(ref(t, reg.Addr+"/stored/deb@"+d), deb); err != nil {
		t.Fatalf("push by digest: %v", err)
	}
	want := reportCounts(t, reg, "stored/deb", d)
	desc, err := remote.Get(ref(t, reg.Addr+"/stored/deb@"+d))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(reg.Addr+"/stored/deb:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	refused(remote.Tag(tag, desc), "stored/deb", "v1")
	stored := review("stored/deb", "v1").Scan
	if stored.Status != "scanned" || stored.Counts == nil || *stored.Counts != want.counts || stored.Policy != nil ||
		stored.Database == nil || stored.Database.Digest != want.db {
		t.Errorf("scan from the stored report: %+v, want counts %+v of database %s", stored, want.counts, want.db)
	}
	if stored.Counts != nil && *stored.Counts != *atPush.Counts {
		t.Errorf("the same image and database counted %+v at the push and %+v stored", *atPush.Counts, *stored.Counts)
	}

	// Tagged in the push that uploads it: not scanned yet.
	fresh := imageOf(t, map[string]string{"fresh.txt": "pushed and tagged at once"})
	if err := remote.Write(ref(t, reg.Addr+"/stored/fresh:v1"), fresh); err != nil {
		t.Fatalf("fresh image: %v", err)
	}
	if sc := review("stored/fresh", "v1").Scan; sc.Status != "pending" || sc.Reason == "" || sc.Counts != nil {
		t.Errorf("scan of an image tagged as it is pushed: %+v", sc)
	}
}

type storedCounts struct {
	counts severityCounts
	db     string
}

// reportCounts waits for repo@d's scan report and counts its findings by
// severity.
func reportCounts(t *testing.T, reg *Registry, repo, d string) storedCounts {
	t.Helper()
	waitReport(t, reg, repo, d, 60*time.Second)
	resp, err := http.Get(reg.URL() + "/api/v1/repositories/" + repo + "/manifests/" + d + "/vulnerabilities")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		DB struct {
			Digest string `json:"digest"`
		} `json:"db"`
		Findings []struct {
			Severity struct {
				Level string `json:"level"`
			} `json:"severity"`
		} `json:"findings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	out := storedCounts{db: r.DB.Digest}
	for _, f := range r.Findings {
		switch f.Severity.Level {
		case "CRITICAL":
			out.counts.Critical++
		case "HIGH":
			out.counts.High++
		case "MEDIUM":
			out.counts.Medium++
		case "LOW":
			out.counts.Low++
		default:
			out.counts.Unknown++
		}
	}
	return out
}
