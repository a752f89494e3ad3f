package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apiCall sends a request to the registry with a bearer token ("" for
// none) and returns the status, the body and the Link header.
func apiCall(t *testing.T, method, url, tok, body string) (int, []byte, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header.Get("Link")
}

type listedTag struct {
	Tag       string `json:"tag"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Pushed    time.Time
	Withheld  bool `json:"withheld"`
	Signature struct {
		Status  string   `json:"status"`
		Signers []string `json:"signers"`
	} `json:"signature"`
	Scan struct {
		Status        string `json:"status"`
		WorstSeverity string `json:"worstSeverity"`
		Counts        *struct{ Unknown int }
		Policy        *struct {
			Mode       string `json:"mode"`
			Passed     bool   `json:"passed"`
			Violations int    `json:"violations"`
		} `json:"policy"`
	} `json:"scan"`
}

func listTags(t *testing.T, base, tok, repo, query string) ([]listedTag, string) {
	t.Helper()
	code, body, link := apiCall(t, http.MethodGet, base+"/api/v1/repositories/"+repo+"/tags"+query, tok, "")
	if code != http.StatusOK {
		t.Fatalf("tags of %s%s: %d %s", repo, query, code, body)
	}
	var out struct{ Tags []listedTag }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Tags, link
}

func tagNames(tags []listedTag) string {
	var n []string
	for _, tg := range tags {
		n = append(n, tg.Tag)
	}
	return strings.Join(n, ",")
}

// TestManagementAPI: with crane pushes, a cosign signature and a scan with
// the database loaded, an admin lists repositories and tags with their
// state and filters them; a caller who is not an admin is refused; a robot
// created over HTTP logs in with docker and crane until it is revoked.
func TestManagementAPI(t *testing.T) {
	t.Parallel()
	crane, docker := tool(t, "crane"), tool(t, "docker")
	s := newSigners(t)
	dir := t.TempDir()
	auditLog := filepath.Join(dir, "audit.log")
	authCfg := usersAliceAndBob(t, `    - name: alice-pushes
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push]
    - name: bob-pulls
      subjects: [user:bob]
      repositories: ["**"]
      actions: [pull]
`) + fmt.Sprintf(`  admins: [user:alice]
  audit:
    file: %s
`, auditLog)
	reg := startRegistry(t, startOptions{config: "version: 1\n" + authCfg + fmt.Sprintf(`trust:
  keys:
    - name: ci
      file: %s
  policies:
    - name: prod-signed
      repositories: ["prod/**"]
      mode: audit
      signers: [ci]
scan:
  policies:
    - name: prod-vulns
      repositories: ["prod/**"]
      mode: audit
      maxSeverity: high
`, s.cosignPub)})
	base, h := reg.URL(), reg.Addr
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	aliceEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	runStdinOK(t, aliceEnv, "alice-pw", docker, "login", "-u", "alice", "--password-stdin", h)
	admin := bearer(t, base, "alice", "alice-pw", "registry:admin:*")
	dbLoaded(t, reg)

	// Two images in prod/app, one signed; a Debian image in prod/deb.
	signed := pushByDigestAs(t, aliceEnv, crane, h, "prod/app")
	s.cosignSignAs(t, aliceEnv, s.cosignKey, h+"/prod/app@"+signed)
	run(t, aliceEnv, crane, "tag", "--insecure", h+"/prod/app@"+signed, "signed")
	unsigned := pushByDigestAs(t, aliceEnv, crane, h, "prod/app")
	run(t, aliceEnv, crane, "tag", "--insecure", h+"/prod/app@"+unsigned, "unsigned")
	run(t, aliceEnv, crane, "append", "--insecure", "-f", debianLayer(t), "-t", h+"/prod/deb:v1")
	deb := strings.TrimSpace(run(t, aliceEnv, crane, "digest", "--insecure", h+"/prod/deb:v1"))

	// Who may call it.
	for _, tc := range []struct {
		tok  string
		want int
	}{{"", 401}, {bearer(t, base, "bob", "bob-pw", "registry:admin:*"), 403}} {
		for _, p := range []string{"/api/v1/repositories", "/api/v1/repositories/prod/app/tags", "/api/v1/robots"} {
			code, body, _ := apiCall(t, http.MethodGet, base+p, tc.tok, "")
			if code != tc.want || !strings.Contains(string(body), `"errors"`) {
				t.Errorf("GET %s (token %v): %d %s, want %d", p, tc.tok != "", code, body, tc.want)
			}
		}
	}

	code, body, link := apiCall(t, http.MethodGet, base+"/api/v1/repositories?n=1", admin, "")
	if code != 200 || string(body) != `{"repositories":[{"name":"prod/app"}]}`+"\n" || !strings.Contains(link, "last=prod%2Fapp") {
		t.Errorf("repositories page 1: %d %s %q", code, body, link)
	}
	code, body, _ = apiCall(t, http.MethodGet, base+"/api/v1/repositories?n=10&last=prod%2Fapp", admin, "")
	if code != 200 || string(body) != `{"repositories":[{"name":"prod/deb"}]}`+"\n" {
		t.Errorf("repositories page 2: %d %s", code, body)
	}

	tags, _ := listTags(t, base, admin, "prod/app", "")
	if tagNames(tags) != "signed,unsigned" {
		t.Fatalf("tags: %s", tagNames(tags))
	}
	for _, tg := range tags {
		wantDigest, wantStatus := signed, "trusted"
		if tg.Tag == "unsigned" {
			wantDigest, wantStatus = unsigned, "untrusted"
		}
		if tg.Digest != wantDigest || tg.Signature.Status != wantStatus || tg.Size < 1024 || tg.Pushed.IsZero() || tg.Withheld {
			t.Errorf("tag %+v", tg)
		}
	}
	if tags, _ := listTags(t, base, admin, "prod/app", "?unsigned=true"); tagNames(tags) != "unsigned" {
		t.Errorf("?unsigned=true: %s", tagNames(tags))
	}
	if tags, link := listTags(t, base, admin, "prod/app", "?n=1"); tagNames(tags) != "signed" || !strings.Contains(link, "last=signed") {
		t.Errorf("?n=1: %s %q", tagNames(tags), link)
	}

	// The Debian image is scanned: it has unrated findings, which the audit
	// policy counts as critical.
	var debTags []listedTag
	if !eventually(90*time.Second, func() bool {
		debTags, _ = listTags(t, base, admin, "prod/deb", "")
		return len(debTags) == 1 && debTags[0].Scan.Status == "scanned"
	}) {
		t.Fatalf("prod/deb:v1 not scanned: %+v\n%s", debTags, reg.Logs())
	}
	if p := debTags[0].Scan.Policy; p == nil || p.Passed || p.Mode != "audit" || p.Violations == 0 {
		t.Errorf("scan policy of prod/deb:v1: %+v", p)
	}
	if tags, _ := listTags(t, base, admin, "prod/deb", "?vulnerable=critical"); tagNames(tags) != "v1" {
		t.Errorf("prod/deb ?vulnerable=critical: %s", tagNames(tags))
	}
	code, body, _ = apiCall(t, http.MethodGet, base+"/api/v1/tags?vulnerable=critical", admin, "")
	var all struct {
		Tags []struct{ Repository, Tag string }
	}
	if code != 200 || json.Unmarshal(body, &all) != nil || len(all.Tags) != 1 || all.Tags[0].Repository != "prod/deb" || all.Tags[0].Tag != "v1" {
		t.Errorf("every repository ?vulnerable=critical: %d %s", code, body)
	}
	if tags, _ := listTags(t, base, admin, "prod/app", "?vulnerable=low"); len(tags) != 0 {
		t.Errorf("prod/app ?vulnerable=low: %s", tagNames(tags))
	}
	checkAuditModeReport(t, reg, base, bearer(t, base, "bob", "bob-pw", "repository:prod/deb:pull"), admin, auditLog, deb)

	// A robot created over HTTP, used by docker and crane, then revoked.
	code, body, _ = apiCall(t, http.MethodPost, base+"/api/v1/robots", admin,
		`{"name":"deployer","description":"helm install","access":[{"repositories":["prod/**"],"actions":["pull"]}],"expires":"24h"}`)
	if code != http.StatusCreated {
		t.Fatalf("create robot: %d %s", code, body)
	}
	var created struct{ Login, Secret string }
	if err := json.Unmarshal(body, &created); err != nil || created.Login != "robot+deployer" || created.Secret == "" {
		t.Fatalf("create robot: %s", body)
	}
	robotEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	runStdinOK(t, robotEnv, created.Secret, docker, "login", "-u", created.Login, "--password-stdin", h)
	if out := run(t, robotEnv, crane, "ls", "--insecure", h+"/prod/app"); !strings.Contains(out, "unsigned") {
		t.Errorf("crane ls as the robot: %s", out)
	}
	code, body, _ = apiCall(t, http.MethodGet, base+"/api/v1/robots", admin, "")
	if code != 200 || !strings.Contains(string(body), `"name":"deployer"`) || strings.Contains(string(body), "pcr_") || strings.Contains(string(body), "secretHash") {
		t.Errorf("robot list: %d %s", code, body)
	}
	if code, body, _ = apiCall(t, http.MethodDelete, base+"/api/v1/robots/deployer", admin, ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if out, err := runStdin(robotEnv, created.Secret, docker, "login", "-u", created.Login, "--password-stdin", h); err == nil {
		t.Errorf("docker login of a revoked robot succeeded: %s", out)
	}
	// What docker login stored (a refresh token) is refused at once.
	if out, err := runErr(robotEnv, crane, "ls", "--insecure", h+"/prod/app"); err == nil {
		t.Errorf("crane ls with a revoked robot's stored login succeeded: %s", out)
	}
	audited, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(audited), created.Secret) {
		t.Errorf("the audit log holds the robot's secret")
	}
	for _, want := range []string{`"kind":"robot","subject":"user:alice"`, `"action":"create","repository":"robot+deployer","result":"success"`,
		`"action":"revoke","repository":"robot+deployer","result":"success"`} {
		if !strings.Contains(string(audited), want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	if strings.Contains(reg.Logs(), created.Secret) {
		t.Errorf("the log holds the robot's secret")
	}
}

// checkAuditModeReport: an image that fails an audit-mode scan policy is
// accepted and readable, and its stored report, a log record, a metric and
// an audit line each say that it fails.
func checkAuditModeReport(t *testing.T, reg *Registry, base, pull, admin, auditLog, d string) {
	t.Helper()
	code, body, _ := apiCall(t, http.MethodGet, base+"/api/v1/repositories/prod/deb/manifests/"+d+"/vulnerabilities", pull, "")
	var report struct {
		Policy           *json.RawMessage `json:"policy"`
		RepositoryPolicy *struct {
			Name       string `json:"name"`
			Mode       string `json:"mode"`
			Passed     bool   `json:"passed"`
			Violations int    `json:"violations"`
		} `json:"repositoryPolicy"`
	}
	if code != 200 || json.Unmarshal(body, &report) != nil {
		t.Fatalf("report: %d %.300s", code, body)
	}
	if p := report.RepositoryPolicy; p == nil || p.Name != "prod-vulns" || p.Mode != "audit" || p.Passed || p.Violations == 0 {
		t.Errorf("the stored report's repository policy: %+v", p)
	}
	if report.Policy != nil {
		t.Errorf("the stored report carries a threshold result no one asked for: %s", *report.Policy)
	}
	// /metrics takes the catalog scope, not the admin scope.
	if code, _, _ := apiCall(t, http.MethodGet, base+"/metrics", admin, ""); code == http.StatusOK {
		t.Errorf("/metrics served to a token of the admin scope alone")
	}
	if got := sampleOf(t, scrapeMetrics(t, reg), `portcullis_scan_policy_results_total{mode="audit",policy="prod-vulns",result="failed"}`); got != 1 {
		t.Errorf("failed audit-mode judgements in the metrics: %v, want 1", got)
	}
	found := false
	sc := bufio.NewScanner(strings.NewReader(reg.Logs()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["level"] == "WARN" && rec["digest"] == d && rec["mode"] == "audit" && rec["policy"] == "prod-vulns" {
			found = true
		}
	}
	if !found {
		t.Errorf("no warning record names the image failing its audit-mode policy\n%s", reg.Logs())
	}
	audited, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	found = false
	for _, line := range strings.Split(string(audited), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["kind"] == "scan" && e["digest"] == d && e["result"] == "failure" && e["rule"] == "prod-vulns" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit line for the failing scan:\n%s", audited)
	}
}
