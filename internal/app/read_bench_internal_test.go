package app

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// benchRegistry is the whole registry with its defaults on the filesystem,
// logging as serve does (JSON, access log on) to io.Discard, with one small
// image pushed as team/app:v1. It returns the handler and the image's
// manifest digest and layer digest.
func benchRegistry(b *testing.B) (http.Handler, string, string) {
	b.Helper()
	a, host := pushBenchRegistry(b)
	img, err := random.Image(4096, 1)
	if err != nil {
		b.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/team/app:v1", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		b.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		b.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		b.Fatal(err)
	}
	return a.Handler(), d.String(), ld.String()
}

// discardWriter is a ResponseWriter that keeps nothing, so that the
// benchmark's own allocations do not count.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkRead measures what the registry spends (CPU, allocations) on
// the reads of a pull, in process, without the network: a manifest GET by
// tag with the Accept header docker sends, and a blob GET.
func BenchmarkRead(b *testing.B) {
	h, _, layer := benchRegistry(b)
	accept := "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, " +
		"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
	for _, bc := range []struct {
		name, method, path string
	}{
		{"manifest-get-tag", http.MethodGet, "/v2/team/app/manifests/v1"},
		{"manifest-head-tag", http.MethodHead, "/v2/team/app/manifests/v1"},
		{"blob-get", http.MethodGet, "/v2/team/app/blobs/" + layer},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(bc.method, bc.path, nil)
			r.Header.Set("Accept", accept)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.code = 0
				h.ServeHTTP(w, r)
				if w.code != http.StatusOK {
					b.Fatalf("%s %s: %d", bc.method, bc.path, w.code)
				}
			}
		})
	}
}
