package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.yaml.in/yaml/v3"
)

// metricName finds the metric names in a PromQL expression.
var metricName = regexp.MustCompile(`\b(?:portcullis|registry)_[a-z0-9_]+\b`)

// dashboardMetrics returns the metric names the Grafana dashboard's
// queries use.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../deploy/grafana/portcullis.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/portcullis.json: %v", err)
	}
	var names []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			found := metricName.FindAllString(tg.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: a query with no metric of ours: %s", p.Title, tg.Expr)
			}
			names = append(names, found...)
		}
	}
	return names
}

// alertMetrics returns the metric names the alert rules use.
func alertMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../deploy/prometheus/portcullis-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("deploy/prometheus/portcullis-rules.yml: %v", err)
	}
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			found := metricName.FindAllString(r.Expr, -1)
			if r.Alert == "" || len(found) == 0 {
				t.Errorf("rule %q: no alert name or no metric of ours: %s", r.Alert, r.Expr)
			}
			names = append(names, found...)
		}
	}
	return names
}

// TestDashboardMetrics runs a registry with everything the dashboard and
// the alert rules graph turned on (TLS, auth with a robot that expires, a
// trust policy, an admission webhook, a replication rule), exercises it
// (a push through the webhook, a refused tag, a replicated image), scrapes
// /metrics and checks that every metric name the dashboard and the rules
// use is in the exposition.
func TestDashboardMetrics(t *testing.T) {
	t.Parallel()
	want := append(dashboardMetrics(t), alertMetrics(t)...)
	slices.Sort(want)
	want = slices.Compact(want)

	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, t.TempDir())
	trustKey := publicKeyFile(t, dir)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"allowed": true}`))
	}))
	t.Cleanup(hook.Close)
	b := startRegistry(t, startOptions{})

	auth := usersAliceAndBob(t, `    - name: alice-all
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push, delete]
  catalog: [user:alice]
`)
	cfg := fmt.Sprintf(`version: 1
http:
  tls:
    certFile: %[1]s
    keyFile: %[2]s
trust:
  keys:
    - name: release
      file: %[3]s
  policies:
    - name: guarded
      repositories: ["guarded/**"]
      mode: enforce
      signers: [release]
admission:
  webhooks:
    - name: review
      url: %[4]s
      repositories: ["team/**"]
remotes:
  - name: site-b
    url: %[5]s
replication:
  rules:
    - name: to-b
      mode: push
      remote: site-b
      repositories: ["prod/**"]
`, certFile, keyFile, trustKey, hook.URL, b.URL()) + auth
	o := startOptions{config: cfg, scheme: "https", client: insecureClient()}
	o.dataDir = t.TempDir()
	cfgFile := filepath.Join(dir, "config.yml")
	writeFile(t, cfgFile, cfg)
	if out, err := runErr(nil, registryBin, "robot", "create", "ci", "--repo", "team/**", "--action", "pull,push",
		"--expires", "720h", "--config", cfgFile, "--data", o.dataDir); err != nil {
		t.Fatalf("robot create: %v\n%s", err, out)
	}
	a := startRegistry(t, o)

	push := func(ref string) error {
		r, err := name.ParseReference(a.Addr + "/" + ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		return remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"}),
			remote.WithTransport(httpsTransport{}))
	}
	if err := push("team/app:v1"); err != nil {
		t.Fatalf("push through the webhook: %v", err)
	}
	if err := push("guarded/app:v1"); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("unsigned tag in an enforce repository: %v, want a refusal", err)
	}
	if err := push("prod/app:v1"); err != nil {
		t.Fatalf("push to replicate: %v", err)
	}

	var (
		missing    []string
		exposition string
	)
	deadline := time.Now().Add(90 * time.Second)
	for {
		exposition = scrapeTLS(t, a)
		missing = missing[:0]
		for _, n := range want {
			if !exposes(exposition, n) {
				missing = append(missing, n)
			}
		}
		// The replication lag is observed once the copy arrives.
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(missing) > 0 {
		t.Errorf("the dashboard and alert rules use metrics the registry does not export: %v", missing)
	}
	// What the session did is counted: the logins (each push logs in),
	// the tag refused in the enforce repository, the webhook's review.
	for name, want := range map[string]float64{
		`portcullis_admission_refusals_total{check="tag",mode="enforce"}`:               1,
		`portcullis_admission_webhook_reviews_total{result="allowed",webhook="review"}`: 1,
		`portcullis_admission_webhook_duration_seconds_count{webhook="review"}`:         1,
		`portcullis_auth_logins_total{kind="login",result="failure"}`:                   0,
	} {
		if got := sampleOf(t, exposition, name); got != want {
			t.Errorf("%s %v, want %v", name, got, want)
		}
	}
	if got := sampleOf(t, exposition, `portcullis_auth_logins_total{kind="login",result="success"}`); got < 3 {
		t.Errorf("successful logins %v, want one per push at least", got)
	}

	// What the storage holds is counted at start-up: after a restart it
	// counts the two images pushed (the refused tag stored nothing).
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	a = startRegistry(t, o)
	deadline = time.Now().Add(30 * time.Second)
	for sampleOf(t, scrapeTLS(t, a), "portcullis_stored_counted_timestamp_seconds") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("what the storage holds was not counted within 30s of start-up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	exposition = scrapeTLS(t, a)
	for name, want := range map[string]float64{"portcullis_stored_tags": 2, "portcullis_stored_manifests": 2, "portcullis_stored_repositories": 2} {
		if got := sampleOf(t, exposition, name); got != want {
			t.Errorf("%s %v, want %v", name, got, want)
		}
	}
	if got := sampleOf(t, exposition, "portcullis_stored_bytes"); got < 2*256 {
		t.Errorf("portcullis_stored_bytes %v, want at least the two images' layers", got)
	}
	// The certificate (24 hours) and the robot (720 hours) expire when
	// they say.
	for name, want := range map[string]time.Duration{
		"portcullis_tls_certificate_expiry_timestamp_seconds":   24 * time.Hour,
		`portcullis_robot_expiry_timestamp_seconds{robot="ci"}`: 720 * time.Hour,
	} {
		got := time.Unix(int64(sampleOf(t, exposition, name)), 0)
		if d := time.Until(got); d < want-time.Hour || d > want {
			t.Errorf("%s: expires in %v, want about %v", name, d, want)
		}
	}
}

// sampleOf returns the value of a sample in exposition, named with its
// labels as printed; 0 when absent.
func sampleOf(t *testing.T, exposition, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// exposes reports whether exposition has a sample of metric name.
func exposes(exposition, name string) bool {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			return true
		}
	}
	return false
}

func scrapeTLS(t *testing.T, r *Registry) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+r.Addr+"/metrics", nil)
	req.SetBasicAuth("alice", "alice-pw")
	resp, err := insecureClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

func insecureClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test's self-signed certificate
}

// httpsTransport sends every request over TLS without verifying the
// certificate: go-containerregistry speaks plain HTTP to a loopback
// address, and the registry under test serves a self-signed certificate.
type httpsTransport struct{}

func (httpsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme = "https"
	return insecureClient().Transport.RoundTrip(r)
}

// publicKeyFile writes a P-256 public key as cosign writes one.
func publicKeyFile(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "release.pub")
	writeFile(t, p, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	return p
}
