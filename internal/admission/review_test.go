package admission

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/trust"
)

var update = flag.Bool("update", false, "rewrite testdata/review.json")

// fakeScans answers the scan checks with fixed outcomes and counts the calls.
type fakeScans struct {
	mode      string
	undecided bool // CheckStored: no scan yet
	push      scan.Outcome
	pushErr   error
	stored    scan.Outcome

	mu                 sync.Mutex
	pushes, storedAsks int
}

func (f *fakeScans) ScanMode(string) policy.Mode { return policy.Mode(f.mode) }

func (f *fakeScans) ScanPush(context.Context, string, digest.Digest, []byte, string) (scan.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pushes++
	return f.push, f.pushErr
}

func (f *fakeScans) StoredOutcome(context.Context, string, digest.Digest, []byte, string) scan.Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.storedAsks++
	return f.stored
}

func (f *fakeScans) CheckStored(context.Context, string, digest.Digest) (bool, bool, string) {
	if f.undecided {
		return false, false, ""
	}
	return true, true, ""
}

// reviewer is an admission webhook that records what it is sent and
// answers with decide.
type reviewer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	header []http.Header
}

func newReviewer(t *testing.T, decide func(Review) Response) *reviewer {
	t.Helper()
	rv := &reviewer{}
	rv.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rv.mu.Lock()
		rv.bodies = append(rv.bodies, body)
		rv.header = append(rv.header, r.Header.Clone())
		rv.mu.Unlock()
		var review Review
		if err := json.Unmarshal(body, &review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(decide(review))
	}))
	t.Cleanup(rv.srv.Close)
	return rv
}

// last returns the last review received, or fails the test.
func (rv *reviewer) last(t *testing.T) Review {
	t.Helper()
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if len(rv.bodies) == 0 {
		t.Fatal("the webhook was not asked")
	}
	var out Review
	if err := json.Unmarshal(rv.bodies[len(rv.bodies)-1], &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (rv *reviewer) calls() int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.bodies)
}

func (rv *reviewer) hook() config.Webhook {
	return config.Webhook{Name: "policy-bot", URL: rv.srv.URL, Timeout: config.Duration(5 * time.Second), FailurePolicy: "fail"}
}

// newGate returns a gate with the scan checker (none when nil) and webhooks.
func newGate(t testing.TB, scans *fakeScans, hooks ...config.Webhook) *Gate {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	pushers, err := NewPushers(db)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Webhooks: hooks, Pushers: pushers, Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry()}
	if scans != nil {
		o.Scans = scans
	}
	g, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

var pushDigest = digest.FromString("image")

func tagPush() TagPush {
	return TagPush{Repository: "team/app", Tag: "v1", Digest: pushDigest, MediaType: "application/vnd.oci.image.manifest.v1+json",
		Pusher: "alice", Addr: "192.0.2.7", Manifest: []byte(`{"schemaVersion":2,"secret-looking":"manifest body"}`),
		RequestID: "req-1", Host: "registry.example.com"}
}

func allowAll(Review) Response { return Response{Allowed: true, Reason: "ok"} }

var vulnerable = report(
	finding("CVE-2024-0001", "openssl", osv.Critical, 9.8, "3.0.14-1"),
	finding("DEBIAN-CVE-2024-0002", "perl", osv.Unknown, 0, ""),
	finding("CVE-2024-0003", "zlib", osv.Low, 3.1, ""),
)

// TestReviewScan: the review carries the scan object in each status, made
// from the scan at the push in enforce, else from what is stored.
func TestReviewScan(t *testing.T) {
	t.Parallel()
	passing := &scan.GateOutcome{Name: "lax", Mode: "enforce", MaxSeverity: "critical", UnknownSeverity: "unknown",
		Result: scan.GateResult{Pass: true}}
	tests := []struct {
		name          string
		scans         *fakeScans
		want          ScanSummary
		pushes, asks  int
		wantCounts    *SeverityCounts
		wantPolicyRes *ScanPolicyResult
	}{
		{
			name:   "enforce: scanned at the push",
			scans:  &fakeScans{mode: "enforce", push: scan.Outcome{Status: scan.StatusScanned, Report: vulnerable, Gate: passing}},
			want:   ScanSummary{Status: "scanned", WorstSeverity: "critical"},
			pushes: 1, wantCounts: &SeverityCounts{Critical: 1, Low: 1, Unknown: 1},
			wantPolicyRes: &ScanPolicyResult{Name: "lax", Mode: "enforce", Passed: true, MaxSeverity: "critical", UnknownSeverity: "unknown"},
		},
		{
			name:  "audit: a report stored by an earlier push by digest",
			scans: &fakeScans{mode: "audit", stored: scan.Outcome{Status: scan.StatusScanned, Report: vulnerable}},
			want:  ScanSummary{Status: "scanned", WorstSeverity: "critical"},
			asks:  1, wantCounts: &SeverityCounts{Critical: 1, Low: 1, Unknown: 1},
		},
		{
			name:  "no policy: pending",
			scans: &fakeScans{stored: scan.Outcome{Status: scan.StatusPending, Reason: "awaiting a vulnerability scan"}},
			want:  ScanSummary{Status: "pending", Reason: "awaiting a vulnerability scan"},
			asks:  1,
		},
		{
			name:  "failed",
			scans: &fakeScans{mode: "quarantine", stored: scan.Outcome{Status: scan.StatusFailed, Reason: "scan failed: not a gzip stream"}},
			want:  ScanSummary{Status: "failed", Reason: "scan failed: not a gzip stream"},
			asks:  1,
		},
		{
			name:  "no database",
			scans: &fakeScans{stored: scan.Outcome{Status: scan.StatusNotScanned, Reason: "no vulnerability database has been imported"}},
			want:  ScanSummary{Status: "not-scanned", Reason: "no vulnerability database has been imported"},
			asks:  1,
		},
		{
			name: "no scanner",
			want: ScanSummary{Status: "not-scanned", Reason: "vulnerability scanning is not running"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rv := newReviewer(t, allowAll)
			g := newGate(t, tt.scans, rv.hook())
			if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
				t.Fatalf("AdmitTag: %v", err)
			}
			got := rv.last(t)
			if got.APIVersion != ReviewAPIVersion || got.Repository != "team/app" || got.Tag != "v1" ||
				got.Digest != pushDigest.String() || got.Pusher != "alice" || got.RequestID != "req-1" {
				t.Errorf("review %+v", got)
			}
			if got.Scan == nil {
				t.Fatal("the review has no scan object")
			}
			s := *got.Scan
			if s.Status != tt.want.Status || s.Reason != tt.want.Reason || s.WorstSeverity != tt.want.WorstSeverity {
				t.Errorf("scan %+v, want status %q reason %q worst %q", s, tt.want.Status, tt.want.Reason, tt.want.WorstSeverity)
			}
			if diff := cmp.Diff(tt.wantCounts, s.Counts); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPolicyRes, s.Policy); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			if tt.wantCounts != nil && (s.Database == nil || s.Database.Digest != "sha256:db" || len(s.Findings) != 3) {
				t.Errorf("database %+v, %d findings", s.Database, len(s.Findings))
			}
			if tt.scans != nil && (tt.scans.pushes != tt.pushes || tt.scans.storedAsks != tt.asks) {
				t.Errorf("%d scans at the push and %d stored outcomes asked, want %d and %d",
					tt.scans.pushes, tt.scans.storedAsks, tt.pushes, tt.asks)
			}
		})
	}
}

// TestWebhookDecidesOnScan: a webhook that refuses critical or unrated
// findings sees them in the review, and the client gets its reason.
func TestWebhookDecidesOnScan(t *testing.T) {
	t.Parallel()
	rv := newReviewer(t, func(r Review) Response {
		if r.Scan != nil && r.Scan.Counts != nil && r.Scan.Counts.Critical+r.Scan.Counts.Unknown > 0 {
			return Response{APIVersion: ReviewAPIVersion, Reason: fmt.Sprintf("%d critical and %d unrated vulnerabilities",
				r.Scan.Counts.Critical, r.Scan.Counts.Unknown)}
		}
		return Response{APIVersion: ReviewAPIVersion, Allowed: true}
	})
	scans := &fakeScans{mode: "audit", stored: scan.Outcome{Status: scan.StatusScanned, Report: vulnerable}}
	g := newGate(t, scans, rv.hook())
	err := g.AdmitTag(context.Background(), tagPush())
	var ec errcode.Error
	if !errors.As(err, &ec) || ec.Code != errcode.ErrorCodeDenied ||
		ec.Message != "denied by admission webhook policy-bot: 1 critical and 1 unrated vulnerabilities" {
		t.Fatalf("AdmitTag: %v", err)
	}
	scans.stored = scan.Outcome{Status: scan.StatusScanned, Report: report(finding("CVE-2024-0003", "zlib", osv.Low, 3.1, ""))}
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatalf("AdmitTag of an image without critical findings: %v", err)
	}
}

// TestWebhooksAfterTheChecks: a refusal by the scan gate is final; the
// webhooks are not asked.
func TestWebhooksAfterTheChecks(t *testing.T) {
	t.Parallel()
	failing := &scan.GateOutcome{Name: "strict", Mode: "enforce", MaxSeverity: "none",
		Result: scan.GateResult{Reason: "scan policy failed: 3 findings (none allowed)"}}
	tests := []struct {
		name  string
		scans *fakeScans
		code  errcode.ErrorCode
		msg   string
	}{
		{"policy fails", &fakeScans{mode: "enforce", push: scan.Outcome{Status: scan.StatusScanned, Report: vulnerable, Gate: failing}},
			errcode.ErrorCodeDenied, `vulnerability policy "strict": scan policy failed`},
		{"no database", &fakeScans{mode: "enforce", push: scan.Outcome{Status: scan.StatusNotScanned, Reason: "no vulnerability database has been imported"}},
			errcode.ErrorCodeDenied, "no vulnerability database"},
		{"scan failed", &fakeScans{mode: "enforce", push: scan.Outcome{Status: scan.StatusFailed, Reason: "the scan did not finish within 1m0s"}},
			errcode.ErrorCodeDenied, "did not finish"},
		{"storage down", &fakeScans{mode: "enforce", pushErr: errors.New("storage unavailable")},
			errcode.ErrorCodeUnavailable, "retry later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rv := newReviewer(t, allowAll)
			g := newGate(t, tt.scans, rv.hook())
			err := g.AdmitTag(context.Background(), tagPush())
			var ec errcode.Error
			if !errors.As(err, &ec) || ec.Code != tt.code || !strings.Contains(ec.Message, tt.msg) {
				t.Fatalf("AdmitTag: %v, want %v with %q", err, tt.code, tt.msg)
			}
			if n := rv.calls(); n != 0 {
				t.Errorf("the webhook was asked %d times after a refusal", n)
			}
		})
	}
}

// TestReviewCarriesNoSecrets: the review holds the documented fields only:
// not the client's address, not the manifest, no credentials in headers.
func TestReviewCarriesNoSecrets(t *testing.T) {
	t.Parallel()
	rv := newReviewer(t, allowAll)
	g := newGate(t, &fakeScans{mode: "enforce", push: scan.Outcome{Status: scan.StatusScanned, Report: vulnerable}}, rv.hook())
	ctx := context.WithValue(context.Background(), struct{ k string }{"auth"}, "Bearer secret-token")
	if err := g.AdmitTag(ctx, tagPush()); err != nil {
		t.Fatal(err)
	}
	rv.mu.Lock()
	body, header := rv.bodies[0], rv.header[0]
	rv.mu.Unlock()
	for _, leak := range []string{"192.0.2.7", "manifest body", "secret", "Bearer", "registry.example.com"} {
		if bytes.Contains(body, []byte(leak)) {
			t.Errorf("the review contains %q:\n%s", leak, body)
		}
	}
	for _, h := range []string{"Authorization", "Cookie", "Proxy-Authorization"} {
		if v := header.Get(h); v != "" {
			t.Errorf("the review request carries %s: %s", h, v)
		}
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{"apiVersion": true, "requestId": true, "repository": true, "tag": true, "digest": true,
		"mediaType": true, "pusher": true, "verdict": true, "scan": true}
	for k := range keys {
		if !documented[k] {
			t.Errorf("undocumented review field %q", k)
		}
	}
}

// TestResponseAPIVersion: an answer may name the apiVersion; another one
// is not understood, and fails closed.
func TestResponseAPIVersion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version string
		ok      bool
	}{{"", true}, {ReviewAPIVersion, true}, {"admission.portcullis/v2", false}} {
		rv := newReviewer(t, func(Review) Response { return Response{APIVersion: tt.version, Allowed: true} })
		g := newGate(t, nil, rv.hook())
		err := g.AdmitTag(context.Background(), tagPush())
		if (err == nil) != tt.ok {
			t.Errorf("answer of apiVersion %q: %v", tt.version, err)
		}
	}
}

// TestReviewContract keeps the review's JSON as README.md documents it:
// testdata/review.json is the example there (go test -update rewrites it).
func TestReviewContract(t *testing.T) {
	t.Parallel()
	when := time.Date(2026, 5, 2, 9, 30, 0, 0, time.UTC)
	d := digest.FromString("prod/app v1.2.0")
	o := scan.Outcome{Status: scan.StatusScanned,
		Report: &scan.Report{DB: scan.DBInfo{Digest: digest.FromString("osv bundle").String(), Modified: dbModified}, Findings: []scan.Finding{
			versioned(finding("CVE-2024-5535", "libssl3", osv.Critical, 9.1, "3.0.14-1~deb12u1"), "3.0.11-1~deb12u2"),
			versioned(finding("DEBIAN-CVE-2023-31484", "perl-base", osv.Unknown, 0, ""), "5.36.0-7+deb12u1"),
			versioned(finding("CVE-2023-45853", "zlib1g", osv.High, 7.5, ""), "1:1.2.13.dfsg-1"),
		}, Unchecked: []scan.Unchecked{{Ecosystem: "PyPI", Type: "python", Packages: 12, Reason: "the vulnerability database has no PyPI records"}}},
		Gate: &scan.GateOutcome{Name: "prod", Mode: "audit", MaxSeverity: "high", UnknownSeverity: "critical",
			Result: scan.GateResult{Violations: make([]scan.Finding, 2)}},
	}
	rv := Review{APIVersion: ReviewAPIVersion, RequestID: "01J9Z3K8Q4M2", Repository: "prod/app", Tag: "v1.2.0",
		Digest: d.String(), MediaType: "application/vnd.oci.image.manifest.v1+json", Pusher: "alice",
		Verdict: &trust.Verdict{Repository: "prod/app", Digest: d, Policy: "prod", PolicyVersion: digest.FromString("policy prod").String(),
			Mode: policy.ModeAudit, Signed: true, Trusted: true, Signers: []string{"ci"},
			Signatures: []trust.Signature{{Kind: trust.KindCosignBundle, Digest: digest.FromString("signature"), Subject: d, Signer: "ci",
				Identity: "SHA256:q0h3jS1tFQpXr2c8mJ4vN7bL5kW9eD1aZ6yU3oI8tRs", Valid: true, Reason: "verified with key ci"}},
			Reason: "signed by ci", Time: when},
		Scan: summarize(o)}
	got, err := json.MarshalIndent(rv, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "review.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("the review's JSON changed (-want +got); update README.md's example and run go test -update:\n%s", diff)
	}
}

func versioned(f scan.Finding, version string) scan.Finding {
	f.Version = version
	return f
}
