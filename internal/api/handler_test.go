package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/trust"
)

const testDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

type fakeAuth struct {
	err   error
	mu    sync.Mutex
	calls []dauth.Access
}

func (a *fakeAuth) Authorize(_ *http.Request, access ...dauth.Access) (token.Grant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, access...)
	if a.err != nil {
		return token.Grant{}, a.err
	}
	return token.Grant{Login: "alice"}, nil
}

type challenge struct{}

func (challenge) Error() string { return "token required" }

func (challenge) SetHeaders(_ *http.Request, w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
}

// fakeVerdicts answers with verdicts in turn, the last one repeated.
type fakeVerdicts struct {
	applies  bool
	verdicts []trust.Verdict
	err      error
	calls    int
}

func (v *fakeVerdicts) Applies(string) bool { return v.applies }

func (v *fakeVerdicts) Verdict(_ context.Context, repo string, d digest.Digest) (trust.Verdict, error) {
	v.calls++
	if v.err != nil {
		return trust.Verdict{}, v.err
	}
	out := v.verdicts[min(v.calls, len(v.verdicts))-1]
	out.Repository, out.Digest = repo, d
	return out, nil
}

type fakeDocuments struct {
	doc []byte
	err error
}

func (d fakeDocuments) Document(context.Context, string, digest.Digest, string) ([]byte, error) {
	return d.doc, d.err
}

// fakeManifests has the manifests in have.
type fakeManifests struct {
	have map[digest.Digest]bool
	err  error
}

func (m fakeManifests) Exists(_ context.Context, _ string, d digest.Digest) (bool, error) {
	return m.have[d], m.err
}

type scanFailed struct{ reason string }

func (e scanFailed) Error() string       { return "scan failed: " + e.reason }
func (e scanFailed) ScanFailure() string { return e.reason }

// stepClock returns start, then start+step, start+2*step, ...
func stepClock(start time.Time, step time.Duration) func() time.Time {
	var mu sync.Mutex
	n := 0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		n++
		return start.Add(time.Duration(n-1) * step)
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	const base = "/api/v1/repositories/team/app/manifests/" + testDigest
	tests := []struct {
		name      string
		method    string
		path      string
		auth      *fakeAuth
		verdicts  *fakeVerdicts
		docs      Documents
		manifests Manifests
		now       func() time.Time
		wantCode  int
		wantError string // OCI error code; "" for a success body
		wantMsg   string
		wantBody  string // exact body of a success
		wantChall bool
		wantCalls int // of Verdict
	}{
		{name: "unknown path", method: http.MethodGet, path: "/api/v1/other", wantCode: 404, wantError: "UNSUPPORTED",
			wantMsg: `no such API endpoint: GET "/api/v1/other"`},
		{name: "unknown document", method: http.MethodGet, path: base + "/logs", wantCode: 404, wantError: "UNSUPPORTED"},
		{name: "bad digest", method: http.MethodGet, path: "/api/v1/repositories/team/app/manifests/sha256:1/verdict", wantCode: 404, wantError: "UNSUPPORTED"},
		{name: "POST", method: http.MethodPost, path: base + "/verdict", wantCode: 404, wantError: "UNSUPPORTED"},
		{name: "no token", method: http.MethodGet, path: base + "/verdict", auth: &fakeAuth{err: challenge{}},
			wantCode: 401, wantError: "UNAUTHORIZED", wantMsg: "authentication required: log in and retry", wantChall: true},
		{name: "refused", method: http.MethodGet, path: base + "/verdict", auth: &fakeAuth{err: errors.New("no")},
			wantCode: 403, wantError: "DENIED", wantMsg: "access denied"},
		{name: "no policies", method: http.MethodGet, path: base + "/verdict", wantCode: 404, wantError: "NAME_UNKNOWN",
			wantMsg: "no trust policy applies to team/app"},
		{name: "no policy for the repository", method: http.MethodGet, path: base + "/verdict", verdicts: &fakeVerdicts{},
			wantCode: 404, wantError: "NAME_UNKNOWN", wantMsg: "no trust policy applies to team/app"},
		{name: "bad wait", method: http.MethodGet, path: base + "/verdict?wait=soon", verdicts: &fakeVerdicts{applies: true},
			wantCode: 405, wantError: "UNSUPPORTED", wantMsg: "wait must be a duration like 30s"},
		{name: "verification failed", method: http.MethodGet, path: base + "/verdict", verdicts: &fakeVerdicts{applies: true, err: errors.New("x")},
			wantCode: 503, wantError: "UNAVAILABLE", wantMsg: "signature verification failed; retry later", wantCalls: 1},
		{name: "no such manifest", method: http.MethodGet, path: base + "/verdict",
			verdicts: &fakeVerdicts{applies: true, err: fmt.Errorf("manifest %s: %w", testDigest, trust.ErrNotFound)},
			wantCode: 404, wantError: "MANIFEST_UNKNOWN", wantMsg: "manifest " + testDigest + " is not in team/app", wantCalls: 1},
		{name: "no such manifest: no wait", method: http.MethodGet, path: base + "/verdict?wait=1m",
			verdicts: &fakeVerdicts{applies: true, err: fmt.Errorf("manifest %s: %w", testDigest, trust.ErrNotFound)},
			now:      stepClock(time.Unix(0, 0), pollInterval),
			wantCode: 404, wantError: "MANIFEST_UNKNOWN", wantMsg: "manifest " + testDigest + " is not in team/app", wantCalls: 1},
		{name: "verdict", method: http.MethodGet, path: base + "/verdict", auth: &fakeAuth{},
			verdicts: &fakeVerdicts{applies: true, verdicts: []trust.Verdict{{Trusted: true}}},
			wantCode: 200, wantBody: `{"repository":"team/app","digest":"` + testDigest + `","signed":false,"trusted":true`, wantCalls: 1},
		{name: "wait until the deadline", method: http.MethodGet, path: base + "/verdict?wait=2ms",
			verdicts: &fakeVerdicts{applies: true, verdicts: []trust.Verdict{{}}}, now: stepClock(time.Unix(0, 0), time.Millisecond),
			wantCode: 200, wantBody: `{"repository":"team/app","digest":"` + testDigest + `","signed":false,"trusted":false`, wantCalls: 2},
		{name: "wait until trusted", method: http.MethodGet, path: base + "/verdict?wait=1m",
			verdicts: &fakeVerdicts{applies: true, verdicts: []trust.Verdict{{}, {Trusted: true}}}, now: stepClock(time.Unix(0, 0), pollInterval),
			wantCode: 200, wantBody: `{"repository":"team/app","digest":"` + testDigest + `","signed":false,"trusted":true`, wantCalls: 2},
		{name: "scanning off", method: http.MethodGet, path: base + "/sbom", wantCode: 404, wantError: "UNSUPPORTED",
			wantMsg: "scanning is not running"},
		{name: "sbom", method: http.MethodGet, path: base + "/sbom", docs: fakeDocuments{doc: []byte(`{"bomFormat":"CycloneDX"}`)},
			wantCode: 200, wantBody: `{"bomFormat":"CycloneDX"}`},
		{name: "no report yet", method: http.MethodGet, path: base + "/vulnerabilities",
			docs:     fakeDocuments{err: errcode.ErrorCodeManifestUnknown.WithMessage("no vulnerabilities yet")},
			wantCode: 404, wantError: "MANIFEST_UNKNOWN", wantMsg: "no vulnerabilities yet"},
		{name: "no report for a manifest not in the repository", method: http.MethodGet, path: base + "/vulnerabilities",
			docs:      fakeDocuments{err: errcode.ErrorCodeManifestUnknown.WithMessage("no vulnerabilities yet")},
			manifests: fakeManifests{},
			wantCode:  404, wantError: "MANIFEST_UNKNOWN", wantMsg: "manifest " + testDigest + " is not in team/app"},
		{name: "no sbom for a manifest not in the repository", method: http.MethodGet, path: base + "/sbom",
			docs:      fakeDocuments{doc: []byte(`{"bomFormat":"CycloneDX"}`)},
			manifests: fakeManifests{},
			wantCode:  404, wantError: "MANIFEST_UNKNOWN", wantMsg: "manifest " + testDigest + " is not in team/app"},
		{name: "no report yet for a manifest in the repository", method: http.MethodGet, path: base + "/vulnerabilities",
			docs:      fakeDocuments{err: errcode.ErrorCodeManifestUnknown.WithMessage("no vulnerabilities yet")},
			manifests: fakeManifests{have: map[digest.Digest]bool{testDigest: true}},
			wantCode:  404, wantError: "MANIFEST_UNKNOWN", wantMsg: "no vulnerabilities yet"},
		{name: "manifests unreadable", method: http.MethodGet, path: base + "/sbom",
			docs:      fakeDocuments{doc: []byte(`{"bomFormat":"CycloneDX"}`)},
			manifests: fakeManifests{err: errors.New("s3: connection refused")},
			wantCode:  500, wantError: "UNKNOWN", wantMsg: "could not read the repository"},
		{name: "scan failed", method: http.MethodGet, path: base + "/vulnerabilities", docs: fakeDocuments{err: scanFailed{"too big"}},
			wantCode: 422, wantBody: `{"reason":"too big","verdict":"scan failed"}`},
		{name: "storage error", method: http.MethodGet, path: base + "/vulnerabilities",
			docs:     fakeDocuments{err: errors.New("s3: connection refused")},
			wantCode: 500, wantError: "UNKNOWN", wantMsg: "could not read the image's vulnerabilities"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := Options{Documents: tt.docs, Manifests: tt.manifests, Now: tt.now}
			if tt.auth != nil {
				o.Auth = tt.auth
			}
			if tt.verdicts != nil {
				o.Verdicts = tt.verdicts
			}
			h, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantCode {
				t.Errorf("status = %d, want %d: %s", rec.Code, tt.wantCode, rec.Body)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if tt.wantError != "" {
				code, msg := decodeError(t, rec.Body.Bytes())
				if code != tt.wantError || (tt.wantMsg != "" && msg != tt.wantMsg) {
					t.Errorf("error = %s %q, want %s %q", code, msg, tt.wantError, tt.wantMsg)
				}
			} else if got := rec.Body.String(); len(got) < len(tt.wantBody) || got[:len(tt.wantBody)] != tt.wantBody {
				t.Errorf("body = %s, want it to start with %s", got, tt.wantBody)
			}
			if tt.wantChall != (rec.Header().Get("WWW-Authenticate") != "") {
				t.Errorf("WWW-Authenticate = %q", rec.Header().Get("WWW-Authenticate"))
			}
			if tt.verdicts != nil && tt.verdicts.calls != tt.wantCalls {
				t.Errorf("Verdict called %d times, want %d", tt.verdicts.calls, tt.wantCalls)
			}
			if tt.auth != nil && tt.wantCode != 404 {
				want := []dauth.Access{Access("team/app", "pull")}
				if diff := cmp.Diff(want, tt.auth.calls); diff != "" {
					t.Errorf("authorized (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		wantCode int
		want     string
		wantMsg  string
	}{
		{"status", Status(http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", "too large"), 413, "MANIFEST_INVALID", "too large"},
		{"internal with a safe message", Internal("could not read", errors.New("secret cause")), 500, "UNKNOWN", "could not read"},
		{"errcode", errcode.ErrorCodeDenied.WithMessage("no"), 403, "DENIED", "no"},
		{"wrapped errcode", errors.Join(errcode.ErrorCodeNameInvalid.WithMessage("bad name")), 400, "NAME_INVALID", "bad name"},
		{"bare code", errcode.ErrorCodeBlobUnknown, 404, "BLOB_UNKNOWN", "blob unknown to registry"},
		{"challenge", challenge{}, 401, "UNAUTHORIZED", "authentication required: log in and retry"},
		{"internal", errors.New("secret cause"), 500, "UNKNOWN", internalMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			WriteError(rec, httptest.NewRequest(http.MethodGet, "/", nil), nil, tt.err)
			if rec.Code != tt.wantCode {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantCode)
			}
			code, msg := decodeError(t, rec.Body.Bytes())
			if code != tt.want || msg != tt.wantMsg {
				t.Errorf("error = %s %q, want %s %q", code, msg, tt.want, tt.wantMsg)
			}
		})
	}
}

func decodeError(t *testing.T, body []byte) (code, message string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("not one OCI error: %s (%v)", body, err)
	}
	return e.Errors[0].Code, e.Errors[0].Message
}
