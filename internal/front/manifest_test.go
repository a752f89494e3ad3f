package front

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/reference"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/auth/audit"
)

// TestManifestReadAuthorized: with auth on, the front handler answers a
// manifest read itself only for a caller the token grants pull; any other
// caller's request goes to the core, which sends the challenge.
func TestManifestReadAuthorized(t *testing.T) {
	t.Parallel()
	ns, refs := memStorage(t)
	ctx := context.Background()
	named, err := reference.WithName("team/app")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := ns.Repository(ctx, named)
	if err != nil {
		t.Fatal(err)
	}
	config, err := repo.Blobs(ctx).Put(ctx, v1.MediaTypeImageConfig, []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ocischema.FromStruct(ocischema.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: config.Digest, Size: config.Size},
	})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ms.Put(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tags(ctx).Tag(ctx, "v1", v1.Descriptor{Digest: d}); err != nil {
		t.Fatal(err)
	}
	_, payload, _ := m.Payload()

	for _, deny := range []bool{false, true} {
		for _, ref := range []string{"v1", d.String()} {
			auth := &countingAuth{deny: deny}
			core := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnauthorized)
			})
			auditLog, err := audit.New(io.Discard, audit.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			h, err := New(core, refs, ns, Options{Guard: &Guard{Auth: auth, Tags: allowTags{}, Repos: ns, Audit: auditLog}})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/v2/team/app/manifests/"+ref, nil)
			req.Header.Set("Accept", v1.MediaTypeImageManifest)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch {
			case deny && rec.Code != http.StatusUnauthorized:
				t.Errorf("GET %s without a grant: %d, want the core's 401", ref, rec.Code)
			case !deny && (rec.Code != http.StatusOK || rec.Body.String() != string(payload)):
				t.Errorf("GET %s with a grant: %d %q, want 200 and the manifest", ref, rec.Code, rec.Body)
			}
			if auth.calls != 1 {
				t.Errorf("GET %s: Authorize called %d times, want 1", ref, auth.calls)
			}
		}
	}
}
