package replication

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// serveManifest answers manifest GETs and HEADs with body and headers.
func serveManifest(body []byte, headers map[string]string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		if _, ok := headers["Content-Type"]; !ok {
			w.Header().Set("Content-Type", v1.MediaTypeImageManifest)
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
		return true
	}
}

func TestGetManifestDigests(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	good := digest.FromBytes(body)
	other := digest.FromString("something else")
	sum := sha512.Sum512(body)
	good512 := digest.NewDigestFromEncoded(digest.SHA512, hex.EncodeToString(sum[:]))
	for _, tc := range []struct {
		name    string
		ref     string
		headers map[string]string
		want    Descriptor
		wantErr error
	}{
		{name: "tag, no header", ref: "1.0",
			want: Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: good, Size: int64(len(body))}},
		{name: "tag, right header", ref: "1.0", headers: map[string]string{"Docker-Content-Digest": good.String()},
			want: Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: good, Size: int64(len(body))}},
		{name: "tag, wrong header", ref: "1.0", headers: map[string]string{"Docker-Content-Digest": other.String()},
			wantErr: ErrDigestMismatch},
		{name: "tag, sha512 header", ref: "1.0", headers: map[string]string{"Docker-Content-Digest": good512.String()},
			want: Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: good, Size: int64(len(body))}},
		{name: "digest", ref: good.String(),
			want: Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: good, Size: int64(len(body))}},
		{name: "sha512 digest", ref: good512.String(),
			want: Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: good512, Size: int64(len(body))}},
		{name: "other digest", ref: other.String(), wantErr: ErrDigestMismatch},
		{name: "digest, wrong header", ref: good.String(), headers: map[string]string{"Docker-Content-Digest": other.String()},
			wantErr: ErrDigestMismatch},
		{name: "generic content type", ref: "1.0", headers: map[string]string{"Content-Type": "application/json; charset=utf-8"},
			want: Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: good, Size: int64(len(body))}},
		{name: "content type with parameters", ref: "1.0", headers: map[string]string{"Content-Type": mediaTypeDockerManifest + "; charset=utf-8"},
			want: Descriptor{MediaType: mediaTypeDockerManifest, Digest: good, Size: int64(len(body))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, authNone, false)
			up.setFault(serveManifest(body, tc.headers))
			r := newRemote(t, up, Options{})
			got, gotBody, err := r.GetManifest(t.Context(), "library/app", tc.ref)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("descriptor (-want +got):\n%s", diff)
			}
			if !bytes.Equal(gotBody, body) {
				t.Errorf("body = %q, want %q", gotBody, body)
			}
		})
	}
}

func TestGetManifestAcceptHeader(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	var accept string
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		accept = r.Header.Get("Accept")
		return false
	})
	r := newRemote(t, up, Options{})
	_, _, _ = r.GetManifest(t.Context(), "library/app", "1.0")
	for _, mt := range []string{v1.MediaTypeImageManifest, v1.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerManifestList} {
		if !strings.Contains(accept, mt) {
			t.Errorf("Accept %q lacks %s", accept, mt)
		}
	}
	if strings.Contains(accept, "distribution.manifest.v1") {
		t.Errorf("Accept %q asks for schema 1", accept)
	}
}

func TestGetManifestTooLarge(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte(" "), MaxManifestSize+1)
	for _, tc := range []struct {
		name      string
		chunked   bool
		body      []byte
		wantError error
	}{
		{"content length", false, big, ErrTooLarge},
		{"chunked", true, big, ErrTooLarge},
		{"exactly the limit", true, big[:MaxManifestSize], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, authNone, false)
			up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", v1.MediaTypeImageManifest)
				if !tc.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(tc.body)))
				}
				w.WriteHeader(http.StatusOK)
				if tc.chunked {
					// Two writes with a flush between: no Content-Length.
					_, _ = w.Write(tc.body[:1])
					http.NewResponseController(w).Flush()
					_, _ = w.Write(tc.body[1:])
				} else {
					_, _ = w.Write(tc.body)
				}
				return true
			})
			r := newRemote(t, up, Options{})
			desc, _, err := r.GetManifest(t.Context(), "library/app", "1.0")
			if !errors.Is(err, tc.wantError) {
				t.Fatalf("err = %v, want %v", err, tc.wantError)
			}
			if err == nil && desc.Size != MaxManifestSize {
				t.Errorf("size = %d, want %d", desc.Size, MaxManifestSize)
			}
		})
	}
}

func TestHeadManifestNeedsDigestForTag(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	up.setFault(serveManifest(nil, map[string]string{"Content-Length": "10"}))
	r := newRemote(t, up, Options{})
	if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err == nil || !strings.Contains(err.Error(), "Docker-Content-Digest") {
		t.Errorf("err = %v, want one about the missing Docker-Content-Digest", err)
	}
	d := digest.FromString("x")
	got, err := r.HeadManifest(t.Context(), "library/app", d.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: d, Size: 10}, got); diff != "" {
		t.Errorf("by digest (-want +got):\n%s", diff)
	}
}

func TestInvalidNames(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	r := newRemote(t, up, Options{})
	for _, tc := range []struct{ repo, ref string }{
		{"Library/App", "1.0"},
		{"library/../app", "1.0"},
		{"library/app?x=1", "1.0"},
		{"library/app", "1.0/../x"},
		{"library/app", "-tag"},
		{"library/app", "sha256:short"},
	} {
		if _, _, err := r.GetManifest(t.Context(), tc.repo, tc.ref); err == nil {
			t.Errorf("GetManifest(%q, %q) succeeded", tc.repo, tc.ref)
		}
	}
	if _, _, err := r.GetBlob(t.Context(), "library/app", "sha256:nothex"); err == nil {
		t.Error("GetBlob with an invalid digest succeeded")
	}
	if got := up.requests.Load(); got != 0 {
		t.Errorf("upstream requests = %d, want 0 for invalid names", got)
	}
}

func TestBlobRedirectDropsAuthorization(t *testing.T) {
	t.Parallel()
	content := []byte("layer content")
	d := digest.FromBytes(content)
	var mu sync.Mutex
	var storeAuth []string
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storeAuth = append(storeAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		_, _ = w.Write(content)
	}))
	t.Cleanup(store.Close)
	// "localhost" is another host than the registry's 127.0.0.1.
	storeURL := strings.Replace(store.URL, "127.0.0.1", "localhost", 1)

	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer token-") {
			return false
		}
		http.Redirect(w, r, storeURL+"/bucket/"+d.Encoded()+"?signature=x", http.StatusTemporaryRedirect)
		return true
	})
	r := newRemote(t, up, Options{})
	rc, n, err := r.GetBlob(t.Context(), "library/app", d)
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) || n != int64(len(content)) {
		t.Errorf("GetBlob = %q (length %d), want %q", got, n, content)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{""}, storeAuth); diff != "" {
		t.Errorf("Authorization at the blob store (-want +got):\n%s", diff)
	}
}

// pushReferrer pushes an artifact whose subject is subj and returns its
// descriptor as a referrers list shows it.
func pushReferrer(t *testing.T, up *upstream, repo string, subj ggcrv1.Descriptor) v1.Descriptor {
	t.Helper()
	img := mutate.ConfigMediaType(randomImage(t), "application/vnd.example.sbom")
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img, ok := mutate.Subject(img, subj).(ggcrv1.Image)
	if !ok {
		t.Fatal("mutate.Subject did not return an image")
	}
	d := up.seed(repo, "referrer-"+subj.Digest.Hex[:8], img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.Digest(d.String()),
		Size: int64(len(raw)), ArtifactType: "application/vnd.example.sbom"}
}

func subjectOf(t *testing.T, up *upstream, repo string) ggcrv1.Descriptor {
	t.Helper()
	img := randomImage(t)
	d := up.seed(repo, "subject", img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return ggcrv1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
}

func TestReferrersAPI(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, true)
	subj := subjectOf(t, up, "library/app")
	want := pushReferrer(t, up, "library/app", subj)
	r := newRemote(t, up, Options{})
	got, err := r.Referrers(t.Context(), "library/app", digest.Digest(subj.Digest.String()))
	if err != nil {
		t.Fatalf("Referrers: %v", err)
	}
	if diff := cmp.Diff([]v1.Descriptor{want}, got); diff != "" {
		t.Errorf("referrers (-want +got):\n%s", diff)
	}

	none, err := r.Referrers(t.Context(), "library/app", digest.FromString("no referrers"))
	if err != nil || len(none) != 0 || none == nil {
		t.Errorf("no referrers: %v, %v; want an empty list", none, err)
	}
	if _, err := r.Referrers(t.Context(), "library/none", digest.FromString("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown repository: err = %v, want ErrNotFound", err)
	}
}

func TestReferrersTagFallback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request) bool
	}{
		{"404 with an OCI error", nil}, // the in-memory registry without the API
		{"404 without a body", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/referrers/") {
				http.NotFound(w, r)
				return true
			}
			return false
		}},
		{"405", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/referrers/") {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return true
			}
			return false
		}},
		{"400", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/referrers/") {
				writeError(w, http.StatusBadRequest, "UNSUPPORTED", "no")
				return true
			}
			return false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, authBearer, false)
			subj := subjectOf(t, up, "library/app")
			want := pushReferrer(t, up, "library/app", subj)
			idx, err := json.Marshal(v1.Index{Versioned: specs.Versioned{SchemaVersion: 2},
				MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{want}})
			if err != nil {
				t.Fatal(err)
			}
			up.putManifest("library/app", "sha256-"+subj.Digest.Hex, v1.MediaTypeImageIndex, idx)
			up.setFault(tc.fault)
			r := newRemote(t, up, Options{})

			got, err := r.Referrers(t.Context(), "library/app", digest.Digest(subj.Digest.String()))
			if err != nil {
				t.Fatalf("Referrers: %v", err)
			}
			if diff := cmp.Diff([]v1.Descriptor{want}, got); diff != "" {
				t.Errorf("referrers (-want +got):\n%s", diff)
			}
			none, err := r.Referrers(t.Context(), "library/app", digest.FromString("no referrers"))
			if err != nil || none == nil || len(none) != 0 {
				t.Errorf("no referrers tag: %v, %v; want an empty list and no error", none, err)
			}
		})
	}
}

func TestReferrersPagination(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	page := func(n int) []v1.Descriptor {
		return []v1.Descriptor{{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString(fmt.Sprint(n)), Size: int64(n)}}
	}
	for _, tc := range []struct {
		name      string
		pages     int
		nextHost  string
		wantPages int
		wantErr   bool
	}{
		{name: "three pages", pages: 3, wantPages: 3},
		{name: "capped at ten", pages: 15, wantPages: 10},
		{name: "next page elsewhere", pages: 2, nextHost: "http://elsewhere.example", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, authNone, true)
			up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				n, _ := strconv.Atoi(r.URL.Query().Get("page"))
				if n+1 < tc.pages {
					w.Header().Set("Link", fmt.Sprintf(`<%s%s?page=%d>; rel="next"`, tc.nextHost, r.URL.Path, n+1))
				}
				w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
				_ = json.NewEncoder(w).Encode(v1.Index{MediaType: v1.MediaTypeImageIndex, Manifests: page(n)})
				return true
			})
			r := newRemote(t, up, Options{})
			got, err := r.Referrers(t.Context(), "library/app", subject)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Referrers = %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Referrers: %v", err)
			}
			var want []v1.Descriptor
			for n := range tc.wantPages {
				want = append(want, page(n)...)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("referrers (-want +got):\n%s", diff)
			}
			if got := up.requests.Load(); got != int64(tc.wantPages) {
				t.Errorf("requests = %d, want %d", got, tc.wantPages)
			}
		})
	}
}
