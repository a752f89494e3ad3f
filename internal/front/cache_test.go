package front

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/replication"
)

// fakeUpstream is a remote that has no manifest and every blob (42
// bytes), and counts the calls made to it.
type fakeUpstream struct {
	mu    sync.Mutex
	calls []string
}

func (u *fakeUpstream) record(call string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, call)
}

func (u *fakeUpstream) Calls() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.calls...)
}

func (*fakeUpstream) Name() string             { return "origin" }
func (*fakeUpstream) URL() string              { return "https://origin.example" }
func (*fakeUpstream) State() replication.State { return replication.State{Available: true} }

func (u *fakeUpstream) HeadManifest(_ context.Context, repo, ref string) (replication.Descriptor, error) {
	u.record("head manifest " + repo + ":" + ref)
	return replication.Descriptor{}, fmt.Errorf("remote origin: head manifest %s:%s: %w", repo, ref, replication.ErrNotFound)
}

func (u *fakeUpstream) GetManifest(_ context.Context, repo, ref string) (replication.Descriptor, []byte, error) {
	u.record("get manifest " + repo + ":" + ref)
	return replication.Descriptor{}, nil, fmt.Errorf("remote origin: get manifest %s:%s: %w", repo, ref, replication.ErrNotFound)
}

func (u *fakeUpstream) GetBlob(_ context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	u.record("get blob " + repo + "@" + d.String())
	return nil, 0, fmt.Errorf("remote origin: get blob: %w", replication.ErrNotFound)
}

func (u *fakeUpstream) HeadBlob(_ context.Context, repo string, d digest.Digest) (replication.Descriptor, error) {
	u.record("head blob " + repo + "@" + d.String())
	return replication.Descriptor{Digest: d, Size: 42}, nil
}

func (u *fakeUpstream) Referrers(_ context.Context, repo string, d digest.Digest) ([]v1.Descriptor, error) {
	u.record("referrers " + repo + "@" + d.String())
	return nil, nil
}

// TestRouteCache: requests are mapped into cache namespaces (?ns=,
// Docker Hub's library/), writes into them are refused, and reads fill
// from the remote before the registry core answers.
func TestRouteCache(t *testing.T) {
	t.Parallel()
	blob := digest.FromString("layer")
	tests := []struct {
		name, method, target string
		wantStatus           int
		wantCode             string   // OCI error code, "" for none
		wantMessage          []string // parts of the error message
		wantCore             string   // the path the core saw, "" for not called
		wantCalls            []string // calls to the remote
		wantHeader           string   // X-Portcullis-Cache
	}{
		{name: "ns of a cache", method: http.MethodGet, target: "/v2/library/alpine/tags/list?ns=docker.io",
			wantStatus: http.StatusOK, wantCore: "/v2/hub/library/alpine/tags/list"},
		{name: "ns with a port and capitals", method: http.MethodGet, target: "/v2/team/app/tags/list?ns=Registry.Example:5000",
			wantStatus: http.StatusOK, wantCore: "/v2/mirror/team/app/tags/list"},
		{name: "ns and a one-word Docker Hub name", method: http.MethodGet, target: "/v2/alpine/tags/list?ns=docker.io",
			wantStatus: http.StatusOK, wantCore: "/v2/hub/library/alpine/tags/list"},
		{name: "unknown ns", method: http.MethodGet, target: "/v2/library/alpine/manifests/latest?ns=quay.io",
			wantStatus: http.StatusNotFound, wantCode: "NAME_UNKNOWN", wantMessage: []string{"quay.io"}},
		{name: "unknown ns, write", method: http.MethodPut, target: "/v2/library/alpine/manifests/latest?ns=quay.io",
			wantStatus: http.StatusNotFound, wantCode: "NAME_UNKNOWN"},
		{name: "one-word Docker Hub name", method: http.MethodGet, target: "/v2/hub/alpine/tags/list",
			wantStatus: http.StatusOK, wantCore: "/v2/hub/library/alpine/tags/list"},
		{name: "one-word name of another registry", method: http.MethodGet, target: "/v2/mirror/alpine/tags/list",
			wantStatus: http.StatusOK, wantCore: "/v2/mirror/alpine/tags/list"},
		{name: "outside every cache", method: http.MethodGet, target: "/v2/team/alpine/tags/list",
			wantStatus: http.StatusOK, wantCore: "/v2/team/alpine/tags/list"},
		{name: "write outside every cache", method: http.MethodPut, target: "/v2/hubble/app/manifests/v1",
			wantStatus: http.StatusCreated, wantCore: "/v2/hubble/app/manifests/v1"},
		{name: "manifest PUT", method: http.MethodPut, target: "/v2/hub/library/app/manifests/v1",
			wantStatus: http.StatusForbidden, wantCode: "DENIED", wantMessage: []string{"hub/", "origin", "read-only"}},
		{name: "manifest PUT, one-word name", method: http.MethodPut, target: "/v2/hub/app/manifests/v1",
			wantStatus: http.StatusForbidden, wantCode: "DENIED", wantMessage: []string{"hub/library/app"}},
		{name: "manifest PUT via ns", method: http.MethodPut, target: "/v2/library/app/manifests/v1?ns=docker.io",
			wantStatus: http.StatusForbidden, wantCode: "DENIED"},
		{name: "upload POST", method: http.MethodPost, target: "/v2/hub/library/app/blobs/uploads/",
			wantStatus: http.StatusForbidden, wantCode: "DENIED"},
		{name: "upload PATCH", method: http.MethodPatch, target: "/v2/hub/library/app/blobs/uploads/abc",
			wantStatus: http.StatusForbidden, wantCode: "DENIED"},
		{name: "manifest DELETE", method: http.MethodDelete, target: "/v2/hub/library/app/manifests/" + blob.String(),
			wantStatus: http.StatusForbidden, wantCode: "DENIED"},
		{name: "blob DELETE", method: http.MethodDelete, target: "/v2/mirror/app/blobs/" + blob.String(),
			wantStatus: http.StatusForbidden, wantCode: "DENIED", wantMessage: []string{"mirror/"}},
		{name: "manifest GET the remote lacks", method: http.MethodGet, target: "/v2/hub/alpine/manifests/edge",
			wantStatus: http.StatusNotFound, wantCode: "MANIFEST_UNKNOWN", wantMessage: []string{"origin", "library/alpine"},
			wantCalls: []string{"get manifest library/alpine:edge"}},
		{name: "blob HEAD answered from the remote", method: http.MethodHead, target: "/v2/hub/library/app/blobs/" + blob.String(),
			wantStatus: http.StatusOK, wantCalls: []string{"head blob library/app@" + blob.String()}, wantHeader: "miss"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			driver := inmemory.New()
			ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
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
			up := &fakeUpstream{}
			caches, err := cache.New([]cache.Spec{
				{Prefix: "hub", Remote: up, Hosts: []string{"docker.io"}, DockerHub: true, TagTTL: 1},
				{Prefix: "mirror", Remote: up, Hosts: []string{"registry.example:5000"}, TagTTL: 1},
			}, cache.Options{Repos: ns, Driver: driver, SpoolDir: t.TempDir(),
				WriteError: func(w http.ResponseWriter, r *http.Request, err error) { api.WriteError(w, r, nil, err) }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(caches.Wait)
			var core string
			h, err := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				core = r.URL.Path
				if r.Method == http.MethodPut {
					w.WriteHeader(http.StatusCreated)
				}
			}), refs, ns, driver, Options{Cache: caches})
			if err != nil {
				t.Fatal(err)
			}
			var body io.Reader
			if tt.method == http.MethodPut {
				body = strings.NewReader(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + blob.String() + `","size":5},"layers":[]}`)
			}
			req := httptest.NewRequest(tt.method, tt.target, body)
			req.Header.Set("Content-Type", v1.MediaTypeImageManifest)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Errorf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if core != tt.wantCore {
				t.Errorf("core saw %q, want %q", core, tt.wantCore)
			}
			if diff := cmp.Diff(tt.wantCalls, up.Calls()); diff != "" {
				t.Errorf("calls to the remote (-want +got):\n%s", diff)
			}
			if got := rec.Header().Get(cache.Header); got != tt.wantHeader {
				t.Errorf("%s: %q, want %q", cache.Header, got, tt.wantHeader)
			}
			if tt.wantCode == "" {
				return
			}
			var e struct {
				Errors []struct{ Code, Message string } `json:"errors"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || len(e.Errors) == 0 {
				t.Fatalf("error body %q: %v", rec.Body, err)
			}
			if e.Errors[0].Code != tt.wantCode {
				t.Errorf("code %s, want %s", e.Errors[0].Code, tt.wantCode)
			}
			for _, part := range tt.wantMessage {
				if !strings.Contains(e.Errors[0].Message, part) {
					t.Errorf("message %q does not say %q", e.Errors[0].Message, part)
				}
			}
		})
	}
}
