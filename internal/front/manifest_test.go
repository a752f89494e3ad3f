package front

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/auth/audit"
)

// TestManifestReadAuthorized: with auth on, the front handler answers a
// manifest read itself only for a caller the token grants pull; any other
// caller's request goes to the core, which sends the challenge.
func TestManifestReadAuthorized(t *testing.T) {
	t.Parallel()
	ns, refs, driver := memStorage(t)
	d, payload := putManifest(t, ns, "team/app", "v1")

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
			h, err := New(core, refs, ns, driver, Options{Guard: &Guard{Auth: auth, Tags: allowTags{}, Repos: ns, Audit: auditLog}})
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

// blockingPulls records pulls only once released.
type blockingPulls struct {
	release  chan struct{}
	recorded chan digest.Digest
}

func (p *blockingPulls) Due(string, digest.Digest) bool { return true }

func (p *blockingPulls) Record(_ context.Context, _ string, d digest.Digest) error {
	<-p.release
	p.recorded <- d
	return nil
}

// TestPullRecordedAfterResponse: a manifest GET is answered before its pull
// is recorded, and Wait returns once the record is written.
func TestPullRecordedAfterResponse(t *testing.T) {
	t.Parallel()
	ns, refs, driver := memStorage(t)
	d, _ := putManifest(t, ns, "team/app", "v1")
	pulls := &blockingPulls{release: make(chan struct{}), recorded: make(chan digest.Digest, 1)}
	core := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	h, err := New(core, refs, ns, driver, Options{Pulls: pulls})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/v2/team/app/manifests/v1", nil)
	req.Header.Set("Accept", v1.MediaTypeImageManifest)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req) // returns with the record still blocked
	if rec.Code != http.StatusOK {
		t.Fatalf("GET: %d %s", rec.Code, rec.Body)
	}
	waited := make(chan struct{})
	go func() {
		h.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("Wait returned before the pull was recorded")
	case <-time.After(50 * time.Millisecond):
	}
	close(pulls.release)
	<-waited
	if got := <-pulls.recorded; got != d {
		t.Errorf("recorded %s, want %s", got, d)
	}
}

// putManifest stores an image manifest (of an empty config) in repo of ns,
// tagged tag, and returns its digest and bytes.
func putManifest(t *testing.T, ns distribution.Namespace, repo, tag string) (digest.Digest, []byte) {
	t.Helper()
	ctx := context.Background()
	named, err := reference.WithName(repo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ns.Repository(ctx, named)
	if err != nil {
		t.Fatal(err)
	}
	config, err := r.Blobs(ctx).Put(ctx, v1.MediaTypeImageConfig, []byte("{}"))
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
	ms, err := r.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ms.Put(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Tags(ctx).Tag(ctx, tag, v1.Descriptor{Digest: d}); err != nil {
		t.Fatal(err)
	}
	_, payload, err := m.Payload()
	if err != nil {
		t.Fatal(err)
	}
	return d, payload
}
