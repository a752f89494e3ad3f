package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis/portcullis/config"
)

// response is what a manifest GET or HEAD answers, as far as clients read it.
type response struct {
	Status  int
	Headers map[string]string
	Body    string
}

// manifestHeaders are the headers of a manifest read that clients look at.
var manifestHeaders = []string{"Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "Docker-Distribution-API-Version"}

func serve(h http.Handler, method, path string, header http.Header) response {
	return serveHeaders(h, method, path, header, manifestHeaders)
}

// serveHeaders answers a request with h and returns the status, the body
// and the headers named.
func serveHeaders(h http.Handler, method, path string, header http.Header, names []string) response {
	req := httptest.NewRequest(method, path, nil)
	req.Header = header
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{Status: rec.Code, Headers: map[string]string{}}
	for _, k := range names {
		res.Headers[k] = rec.Header().Get(k)
	}
	body, _ := io.ReadAll(rec.Body)
	if res.Status < 400 || res.Status == http.StatusRequestedRangeNotSatisfiable {
		res.Body = string(body)
	} else {
		// Errors: the front handler answers them from distribution; only
		// the code matters (the JSON differs in spacing).
		res.Body = strings.SplitN(string(body), `"message"`, 2)[0]
		delete(res.Headers, "Content-Length")
	}
	return res
}

// servedApp returns the registry of cfg on the filesystem (in a temporary
// directory; the access log off unless cfg sets it), logging to log, served
// by an httptest server, and the server's host.
func servedApp(tb testing.TB, cfg *config.Config, log *slog.Logger) (*App, string) {
	tb.Helper()
	cfg.DataDir = tb.TempDir()
	if cfg.Log.AccessLog == nil {
		cfg.Log.AccessLog = new(bool)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	a, err := New(context.Background(), cfg, log, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	tb.Cleanup(func() {
		srv.Close()
		if err := a.Close(); err != nil {
			tb.Error(err)
		}
	})
	return a, strings.TrimPrefix(srv.URL, "http://")
}

// TestManifestReadsMatchDistribution: every manifest GET and HEAD the front
// handler answers itself gets the status, headers and body distribution's
// handler gives for the same request, for each manifest type, by tag and by
// digest, with each Accept header clients send, and with If-None-Match.
func TestManifestReadsMatchDistribution(t *testing.T) {
	t.Parallel()
	a, host := servedApp(t, config.Default(), slog.New(slog.DiscardHandler))

	ociImage, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	dockerImage := mutate.MediaType(ociImage, types.DockerManifestSchema2)
	dockerImage = mutate.ConfigMediaType(dockerImage, types.DockerConfigJSON)
	ociIndex, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	dockerList := mutate.IndexMediaType(ociIndex, types.DockerManifestList)
	digests := map[string]v1.Hash{}
	for tag, w := range map[string]remote.Taggable{"oci": ociImage, "docker": dockerImage, "index": ociIndex, "list": dockerList} {
		ref, err := name.ParseReference(host+"/team/app:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		switch w := w.(type) {
		case v1.Image:
			if err := remote.Write(ref, w); err != nil {
				t.Fatalf("push %s: %v", tag, err)
			}
			digests[tag], _ = w.Digest()
		case v1.ImageIndex:
			if err := remote.WriteIndex(ref, w); err != nil {
				t.Fatalf("push %s: %v", tag, err)
			}
			digests[tag], _ = w.Digest()
		}
	}

	accepts := map[string][]string{
		"none":   nil,
		"oci":    {string(types.OCIManifestSchema1)},
		"index":  {string(types.OCIImageIndex) + "; q=0.9"},
		"docker": {string(types.DockerManifestSchema2)},
		"list":   {string(types.DockerManifestList)},
		"all": {string(types.OCIImageIndex) + ", " + string(types.OCIManifestSchema1),
			string(types.DockerManifestList), string(types.DockerManifestSchema2)},
	}
	var refs []string
	for tag, d := range digests {
		refs = append(refs, tag, d.String())
	}
	refs = append(refs, "missing", "sha256:"+strings.Repeat("0", 64))
	served := 0
	for _, ref := range refs {
		for accept, values := range accepts {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				for _, ifNoneMatch := range []string{"", "etag"} {
					path := "/v2/team/app/manifests/" + ref
					header := http.Header{"Accept": values}
					if d, ok := digests[ref]; ok && ifNoneMatch != "" {
						header.Set("If-None-Match", `"`+d.String()+`"`)
					}
					want := serve(a.dist, method, path, header)
					got := serve(a.handler, method, path, header)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("%s %s, Accept %s, If-None-Match %q (-distribution +ours):\n%s", method, ref, accept, ifNoneMatch, diff)
					}
					if got.Status == http.StatusOK {
						served++
					}
				}
			}
		}
	}
	if served == 0 {
		t.Error("no request was answered with 200")
	}

	// A deleted manifest is gone from every read, though its bytes were
	// read (and kept) just before.
	del := httptest.NewRecorder()
	a.handler.ServeHTTP(del, httptest.NewRequest(http.MethodDelete, "/v2/team/app/manifests/"+digests["oci"].String(), nil))
	if del.Code != http.StatusAccepted {
		t.Fatalf("DELETE: %d %s", del.Code, del.Body)
	}
	for _, ref := range []string{"oci", digests["oci"].String()} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			header := http.Header{"Accept": accepts["all"]}
			path := "/v2/team/app/manifests/" + ref
			got := serve(a.handler, method, path, header)
			if got.Status != http.StatusNotFound {
				t.Errorf("%s %s after DELETE: %d, want 404", method, ref, got.Status)
			}
			if diff := cmp.Diff(serve(a.dist, method, path, header), got); diff != "" {
				t.Errorf("%s %s after DELETE (-distribution +ours):\n%s", method, ref, diff)
			}
		}
	}
}
