package front

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3"
	dauth "github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/internal/referrers"
)

// countingAuth grants every access to alice, or refuses every one with a
// challenge when deny is set, and counts the calls.
type countingAuth struct {
	mu    sync.Mutex
	calls int
	deny  bool
}

func (a *countingAuth) Authorize(_ *http.Request, _ ...dauth.Access) (token.Grant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.deny {
		return token.Grant{}, testChallenge{}
	}
	return token.Grant{Login: "alice"}, nil
}

type testChallenge struct{}

func (testChallenge) Error() string { return "token required" }

func (testChallenge) SetHeaders(_ *http.Request, w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
}

// allowTags allows every tag operation and grants what is requested.
type allowTags struct{}

func (allowTags) SubjectForLogin(login string) pauth.Subject {
	return pauth.Subject{Kind: pauth.User, Name: login}
}

func (allowTags) TagDecision(pauth.Subject, string, string, pauth.TagOp) pauth.Ruling {
	return pauth.Ruling{Allowed: true}
}

func (allowTags) Grant(_ pauth.Subject, _ string, requested pauth.Actions) (pauth.Actions, pauth.Decision) {
	return requested, pauth.Decision{}
}

// recordingAdmission admits everything and remembers who it saw.
type recordingAdmission struct {
	mu               sync.Mutex
	pusher, recorded string
	puller           string
}

func (*recordingAdmission) Active(string) bool { return true }

func (a *recordingAdmission) AdmitTag(_ context.Context, p admission.TagPush) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pusher = p.Pusher
	return nil
}

func (a *recordingAdmission) AllowPull(_ context.Context, p admission.Pull) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.puller = p.Login
	return nil
}

func (a *recordingAdmission) AllowBlob(_ context.Context, b admission.BlobRead) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.puller = b.Login
	return nil
}

func (a *recordingAdmission) RecordPush(_ string, _ digest.Digest, login string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recorded = login
}

// memStorage is an in-memory registry storage and a referrers API over it.
func memStorage(t *testing.T) (distribution.Namespace, *referrers.Handler, storagedriver.StorageDriver) {
	t.Helper()
	driver := inmemory.New()
	ns, err := storage.NewRegistry(context.Background(), driver)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := referrers.NewIndex(driver)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := referrers.NewHandler(idx, ns, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return ns, refs, driver
}

// readCounter counts the bytes read from a request body.
type readCounter struct {
	r io.Reader
	n int
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestCallerResolvedOnce checks that the front handler asks for the
// caller's token once per request, and that every layer sees the caller.
func TestCallerResolvedOnce(t *testing.T) {
	t.Parallel()
	const subject = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + subject + `","size":0},"layers":[]}`)
	tests := []struct {
		name       string
		method     string
		path       string
		body       []byte
		deny       bool
		wantStatus int
		wantCalls  int
		wantLogin  string // seen by admission (pusher, recorded pusher, or puller)
	}{
		{name: "manifest PUT by tag", method: http.MethodPut, path: "/v2/team/app/manifests/v1", body: manifest,
			wantStatus: http.StatusCreated, wantCalls: 1, wantLogin: "alice"},
		{name: "manifest PUT without grant is challenged before its body is read", method: http.MethodPut, path: "/v2/team/app/manifests/v1", body: manifest,
			deny: true, wantStatus: http.StatusUnauthorized, wantCalls: 1},
		{name: "manifest GET under admission", method: http.MethodGet, path: "/v2/team/app/manifests/" + subject,
			wantStatus: http.StatusOK, wantCalls: 1, wantLogin: "alice"},
		{name: "manifest DELETE", method: http.MethodDelete, path: "/v2/team/app/manifests/" + subject,
			wantStatus: http.StatusAccepted, wantCalls: 1},
		{name: "blob GET under admission", method: http.MethodGet, path: "/v2/team/app/blobs/" + subject,
			wantStatus: http.StatusOK, wantCalls: 1, wantLogin: "alice"},
		{name: "blob HEAD left to distribution", method: http.MethodHead, path: "/v2/team/app/blobs/" + subject,
			wantStatus: http.StatusOK, wantCalls: 0},
		{name: "referrers without grant", method: http.MethodGet, path: "/v2/team/app/referrers/" + subject,
			deny: true, wantStatus: http.StatusUnauthorized, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ns, refs, driver := memStorage(t)
			log := slog.New(slog.DiscardHandler)
			auditLog, err := audit.New(io.Discard, audit.Options{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			auth := &countingAuth{deny: tt.deny}
			adm := &recordingAdmission{}
			core := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.Method {
				case http.MethodPut:
					w.WriteHeader(http.StatusCreated)
				case http.MethodDelete:
					w.WriteHeader(http.StatusAccepted)
				default:
					w.WriteHeader(http.StatusOK)
				}
			})
			h, err := New(core, refs, ns, driver, Options{
				Guard:     &Guard{Auth: auth, Tags: allowTags{}, Repos: ns, Audit: auditLog},
				Admission: adm,
				Log:       log,
			})
			if err != nil {
				t.Fatal(err)
			}
			body := &readCounter{r: bytes.NewReader(tt.body)}
			req := httptest.NewRequest(tt.method, tt.path, body)
			if tt.body != nil {
				req.Header.Set("Content-Type", v1.MediaTypeImageManifest)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if auth.calls != tt.wantCalls {
				t.Errorf("Authorize called %d times, want %d", auth.calls, tt.wantCalls)
			}
			if tt.wantStatus == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without a challenge")
			}
			if tt.deny && body.n > 0 {
				t.Errorf("%d bytes of the body were read before the caller was refused", body.n)
			}
			switch {
			case tt.method == http.MethodPut:
				if adm.pusher != tt.wantLogin || adm.recorded != tt.wantLogin {
					t.Errorf("admission saw pusher %q, recorded %q; want %q", adm.pusher, adm.recorded, tt.wantLogin)
				}
			case tt.method == http.MethodGet && tt.wantLogin != "":
				if adm.puller != tt.wantLogin {
					t.Errorf("admission saw puller %q, want %q", adm.puller, tt.wantLogin)
				}
			}
		})
	}
}
