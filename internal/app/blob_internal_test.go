package app

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/front"
)

// blobHeaders are the headers of a blob read that clients look at.
var blobHeaders = []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest",
	"Etag", "Cache-Control", "Last-Modified", "Docker-Distribution-API-Version"}

func serveBlob(h http.Handler, method, path string, header http.Header) response {
	return serveHeaders(h, method, path, header, blobHeaders)
}

// TestBlobReadsMatchDistribution: every blob GET and HEAD gets the status,
// headers and body distribution's handler gives for the same request: a
// layer and a config of the repository, with and without Range, If-None-Match
// and If-Range; a blob only another repository links, a manifest read as a
// blob, an unknown blob, a sha512 digest. And the front handler serves the
// repository's blobs itself, from their files.
func TestBlobReadsMatchDistribution(t *testing.T) {
	t.Parallel()
	a, host := servedApp(t, config.Default(), slog.New(slog.DiscardHandler))
	var blobs, other []string
	var manifest string
	for _, repo := range []string{"team/app", "team/other"} {
		img, err := random.Image(1000, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(host+"/"+repo+":v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		ld, err := layers[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		cd, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if repo == "team/app" {
			blobs = []string{ld.String(), cd.String()}
			md, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			manifest = md.String()
		} else {
			other = []string{ld.String()}
		}
	}

	headers := map[string]http.Header{
		"none":           {},
		"range":          {"Range": {"bytes=10-99"}},
		"open range":     {"Range": {"bytes=900-"}},
		"suffix range":   {"Range": {"bytes=-7"}},
		"whole range":    {"Range": {"bytes=0-"}},
		"past the end":   {"Range": {"bytes=5000-6000"}},
		"bad range":      {"Range": {"bytes=x-y"}},
		"if-range match": {"Range": {"bytes=0-9"}, "If-Range": {`"` + blobs[0] + `"`}},
		"if-range other": {"Range": {"bytes=0-9"}, "If-Range": {`"` + blobs[1] + `"`}},
		"if-none-match":  {"If-None-Match": {`"` + blobs[0] + `"`}},
	}
	digests := append(append(blobs, other...), manifest, "sha256:"+strings.Repeat("0", 64),
		"sha512:"+strings.Repeat("0", 128))
	for _, d := range digests {
		for hname, header := range headers {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				path := "/v2/team/app/blobs/" + d
				want := serveBlob(a.dist, method, path, header.Clone())
				got := serveBlob(a.handler, method, path, header.Clone())
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s %s, %s (-distribution +ours):\n%s", method, d, hname, diff)
				}
			}
		}
	}

	// The repository's blobs are served by the front handler, without the
	// core; everything else goes to the core.
	teapot := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h, err := front.New(teapot, a.core.refs, a.core.repos, a.driver, front.Options{Blobs: a.core.blobs})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(blobs, other[0], manifest) {
		got := serveBlob(h, http.MethodGet, "/v2/team/app/blobs/"+d, http.Header{})
		want := serveBlob(a.dist, http.MethodGet, "/v2/team/app/blobs/"+d, http.Header{})
		if want.Status == http.StatusOK && got.Status != http.StatusOK {
			t.Errorf("GET %s: %d from the front handler, want it served from its file", d, got.Status)
		}
		if want.Status != http.StatusOK && got.Status != http.StatusTeapot {
			t.Errorf("GET %s: %d from the front handler, want it left to the core", d, got.Status)
		}
	}
}
