package front

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path     string
		want     Route
		wantCode string // errcode value, or "unknown" for ErrUnknownRoute
	}{
		{path: "/v2/", want: Route{Kind: KindBase}},
		{path: "/v2", want: Route{Kind: KindBase}},
		{path: "/v2/_catalog", want: Route{Kind: KindCatalog}},
		{path: "/v2/a/b/tags/list", want: Route{Kind: KindTags, Name: "a/b"}},
		{path: "/v2/a/manifests/v1.0", want: Route{Kind: KindManifest, Name: "a", Tag: "v1.0"}},
		{path: "/v2/a/manifests/" + dgst, want: Route{Kind: KindManifest, Name: "a", Digest: dgst}},
		{path: "/v2/manifests/manifests/latest", want: Route{Kind: KindManifest, Name: "manifests", Tag: "latest"}},
		{path: "/v2/a/blobs/" + dgst, want: Route{Kind: KindBlob, Name: "a", Digest: dgst}},
		{path: "/v2/a/blobs/uploads/", want: Route{Kind: KindUpload, Name: "a"}},
		{path: "/v2/a/blobs/uploads/0f3c-uuid", want: Route{Kind: KindUpload, Name: "a", Upload: "0f3c-uuid"}},
		{path: "/v2/blobs/blobs/" + dgst, want: Route{Kind: KindBlob, Name: "blobs", Digest: dgst}},
		{path: "/v2/x/referrers/" + dgst, want: Route{Kind: KindReferrers, Name: "x", Digest: dgst}},
		{path: "/v2/referrers/x/referrers/" + dgst, want: Route{Kind: KindReferrers, Name: "referrers/x", Digest: dgst}},
		{path: "/v2/A/tags/list", wantCode: "NAME_INVALID"},
		// A first component with upper case or a port is a domain to
		// reference.WithName; the spec's grammar has no domain.
		{path: "/v2/Scanned/vuln/manifests/v1", wantCode: "NAME_INVALID"},
		{path: "/v2/localhost:5000/x/blobs/uploads/", wantCode: "NAME_INVALID"},
		{path: "/v2/registry.example.com/Team/app/tags/list", wantCode: "NAME_INVALID"},
		{path: "/v2/a-/manifests/x", wantCode: "NAME_INVALID"},
		{path: "/v2/" + strings.Repeat("a", 256) + "/manifests/x", wantCode: "NAME_INVALID"},
		{path: "/v2/a/manifests/-x", wantCode: "TAG_INVALID"},
		{path: "/v2/a/manifests/" + strings.Repeat("t", 129), wantCode: "TAG_INVALID"},
		{path: "/v2/a/manifests/sha256:zz", wantCode: "DIGEST_INVALID"},
		{path: "/v2/a/blobs/latest", wantCode: "DIGEST_INVALID"},
		{path: "/v2/a/referrers/", wantCode: "DIGEST_INVALID"},
		{path: "/v2/a/manifests/", wantCode: "TAG_INVALID"},
		{path: "/v2/a", wantCode: "unknown"},
		{path: "/v2/a/tags", wantCode: "unknown"},
		{path: "/v2/manifests/x", wantCode: "unknown"},
		{path: "/v3/a/manifests/x", wantCode: "unknown"},
		{path: "/v2/a/blobs/uploads/x/y", wantCode: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := ParseRoute(tt.path)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("ParseRoute: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				return
			}
			if got := codeOf(err); got != tt.wantCode {
				t.Errorf("error %v: code %q, want %q", err, got, tt.wantCode)
			}
		})
	}
}

func codeOf(err error) string {
	if errors.Is(err, ErrUnknownRoute) {
		return "unknown"
	}
	var e errcode.Error
	if errors.As(err, &e) {
		return e.Code.String()
	}
	return ""
}

// FuzzParseRoute checks that any path either fails cleanly or yields a route
// whose parts are valid and which parses back to itself.
func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/_catalog", "/v2/a/b/tags/list", "/v2/a/manifests/latest",
		"/v2/a/blobs/" + dgst, "/v2/a/blobs/uploads/u", "/v2/a/referrers/" + dgst, "/v2/a/manifests/sha512:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, err := ParseRoute(p)
		if err != nil {
			if codeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if rt.Digest != "" {
			if err := rt.Digest.Validate(); err != nil {
				t.Fatalf("invalid digest accepted: %q", rt.Digest)
			}
		}
		if rt.Kind != KindBase && rt.Kind != KindCatalog {
			if err := validateName(rt.Name); err != nil {
				t.Fatalf("invalid name accepted: %q", rt.Name)
			}
		}
		if rt.Tag != "" && strings.ContainsAny(rt.Tag, "/:@") {
			t.Fatalf("invalid tag accepted: %q", rt.Tag)
		}
		if rt.Kind == KindManifest && (rt.Tag == "") == (rt.Digest == "") {
			t.Fatalf("manifest route with neither or both of tag and digest: %+v", rt)
		}
		var _ digest.Digest = rt.Digest
	})
}
