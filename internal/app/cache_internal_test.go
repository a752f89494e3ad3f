package app

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMirrorHandler: the unprefixed listener serves /v2/<name>/... as
// /v2/<prefix>/<name>/..., and everything else as it comes.
func TestMirrorHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, target string
		wantPath     string
		wantURI      string
	}{
		{"manifest", "/v2/library/alpine/manifests/3.20", "/v2/hub/library/alpine/manifests/3.20", "/v2/hub/library/alpine/manifests/3.20"},
		{"blob", "/v2/library/x/blobs/sha256:aa", "/v2/hub/library/x/blobs/sha256:aa", "/v2/hub/library/x/blobs/sha256:aa"},
		{"one-word name", "/v2/alpine/tags/list", "/v2/hub/alpine/tags/list", "/v2/hub/alpine/tags/list"},
		{"query kept", "/v2/library/x/manifests/v1?digest=1", "/v2/hub/library/x/manifests/v1", "/v2/hub/library/x/manifests/v1?digest=1"},
		{"ns routed by the front handler", "/v2/library/x/manifests/v1?ns=docker.io", "/v2/library/x/manifests/v1", "/v2/library/x/manifests/v1?ns=docker.io"},
		{"already prefixed", "/v2/hub/library/x/manifests/v1", "/v2/hub/library/x/manifests/v1", "/v2/hub/library/x/manifests/v1"},
		{"name starting like the prefix", "/v2/hubble/x/manifests/v1", "/v2/hub/hubble/x/manifests/v1", "/v2/hub/hubble/x/manifests/v1"},
		{"base", "/v2/", "/v2/", "/v2/"},
		{"catalog", "/v2/_catalog", "/v2/_catalog", "/v2/_catalog"},
		{"token", "/token", "/token", "/token"},
		{"health", "/healthz", "/healthz", "/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got struct{ Path, URI string }
			next := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				got.Path, got.URI = r.URL.Path, r.RequestURI
			})
			mirrorHandler("hub", next).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, tt.target, nil))
			want := struct{ Path, URI string }{tt.wantPath, tt.wantURI}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("mirrorHandler(%s) (-want +got):\n%s", tt.target, diff)
			}
		})
	}
}
