package app_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/testenv"
)

// cacheUpstream is go-containerregistry's in-memory registry behind a
// handler that counts requests per method and path and lets a test inject
// faults.
type cacheUpstream struct {
	t   *testing.T
	url string
	reg http.Handler

	mu     sync.Mutex
	counts map[string]int
	fault  func(w http.ResponseWriter, r *http.Request) bool
}

func newCacheUpstream(t *testing.T) *cacheUpstream {
	t.Helper()
	u := &cacheUpstream{t: t, counts: map[string]int{}, reg: registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.counts[r.Method+" "+r.URL.Path]++
		fault := u.fault
		u.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		u.reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL
	return u
}

func (u *cacheUpstream) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fault = f
}

// count returns the requests with method ("" any) whose path contains part.
func (u *cacheUpstream) count(method, part string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for k, c := range u.counts {
		m, p, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.Contains(p, part) {
			n += c
		}
	}
	return n
}

func (u *cacheUpstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	clear(u.counts)
}

// push writes img to repo:tag (or repo@digest) on the in-memory registry
// directly.
func (u *cacheUpstream) push(repo, tag string, img v1.Image) v1.Hash {
	u.t.Helper()
	srv := httptest.NewServer(u.reg)
	defer srv.Close()
	sep := ":"
	if strings.Contains(tag, ":") {
		sep = "@"
	}
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/"+repo+sep+tag, name.Insecure)
	if err != nil {
		u.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		u.t.Fatalf("push %s upstream: %v", ref, err)
	}
	d, _ := img.Digest()
	return d
}

// startCache runs a registry with a cache "hub" of u (remote "origin",
// serving ns=docker.io); mutate adjusts the configuration.
func startCache(t *testing.T, u *cacheUpstream, mutate func(*config.Config)) *testenv.Registry {
	t.Helper()
	return testenv.Start(t, func(c *config.Config) {
		c.Remotes = []config.Remote{{Name: "origin", URL: u.url}}
		c.Cache = []config.Cache{{Prefix: "hub", Remote: "origin", Hosts: []string{"docker.io"}}}
		if mutate != nil {
			mutate(c)
		}
		c.Provision()
	})
}

// blobImage is an image whose one layer is size random bytes; it returns
// the image, the layer's digest and its bytes.
func blobImage(t *testing.T, size int64) (v1.Image, v1.Hash, []byte) {
	t.Helper()
	b := make([]byte, size)
	if _, err := crand.Read(b); err != nil {
		t.Fatal(err)
	}
	layer := static.NewLayer(b, types.OCILayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := layer.Digest()
	return img, d, b
}

// ociError decodes the first error of an OCI error body.
func ociError(t *testing.T, body []byte) (code, message string) {
	t.Helper()
	var v struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &v); err != nil || len(v.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return v.Errors[0].Code, v.Errors[0].Message
}

// get sends method url with the manifest media types accepted and returns
// the answer with its body read.
func get(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join([]string{string(types.OCIManifestSchema1), string(types.OCIImageIndex),
		string(types.DockerManifestSchema2), string(types.DockerManifestList)}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// blobData is where the filesystem storage keeps blob d's bytes.
func blobData(reg *testenv.Registry, d v1.Hash) string {
	return filepath.Join(reg.Config.FilesystemRoot(), "docker/registry/v2/blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestCacheManifestOverHTTP: a pull through the cache serves the
// upstream's manifest byte for byte (X-Portcullis-Cache: miss), then from
// storage without the remote (hit); go-containerregistry pulls the whole
// image, blobs included; an unknown tag is 404 naming the remote.
func TestCacheManifestOverHTTP(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, _ := random.Image(2048, 2)
	want := u.push("library/app", "v1", img)
	raw, _ := img.RawManifest()
	reg := startCache(t, u, nil)
	url := reg.URL + "/v2/hub/library/app/manifests/v1"

	resp, body := get(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Portcullis-Cache") != "miss" {
		t.Fatalf("first GET: %d, X-Portcullis-Cache %q; want 200 miss: %s", resp.StatusCode, resp.Header.Get("X-Portcullis-Cache"), body)
	}
	if !bytes.Equal(body, raw) || resp.Header.Get("Docker-Content-Digest") != want.String() {
		t.Errorf("served manifest %s differs from the upstream's %s", resp.Header.Get("Docker-Content-Digest"), want)
	}
	u.reset()
	resp, body = get(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Portcullis-Cache") != "hit" || !bytes.Equal(body, raw) {
		t.Errorf("second GET: %d, X-Portcullis-Cache %q; want 200 hit with the same bytes", resp.StatusCode, resp.Header.Get("X-Portcullis-Cache"))
	}
	if n := u.count("", "/v2/library/app/manifests/"); n != 0 {
		t.Errorf("second GET within tagTTL sent %d manifest requests upstream, want 0", n)
	}

	pulled, err := remote.Image(mustRef(t, reg.Host+"/hub/library/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := pulled.Digest(); d != want {
		t.Errorf("pulled digest %s, want %s", d, want)
	}
	layers, _ := pulled.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Errorf("read layer through the cache: %v", err) // ggcr verifies the digest
		}
		rc.Close()
	}

	resp, body = get(t, http.MethodGet, reg.URL+"/v2/hub/library/app/manifests/nope")
	code, msg := ociError(t, body)
	if resp.StatusCode != http.StatusNotFound || code != "MANIFEST_UNKNOWN" || !strings.Contains(msg, "origin") {
		t.Errorf("unknown tag: %d %s %q; want 404 MANIFEST_UNKNOWN naming remote origin", resp.StatusCode, code, msg)
	}
}

// throttledBlob serves GET of blob d (with content b) in two parts: the
// first chunk at once, the rest once release is closed.
func throttledBlob(d v1.Hash, b []byte, first int, release <-chan struct{}) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Header().Set("Docker-Content-Digest", d.String())
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b[:first])
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return true
		}
		_, _ = w.Write(b[first:])
		return true
	}
}

// TestCacheBlobOneFetch: many clients asking at once for one missing
// large blob cause one upstream GET, and each gets the right bytes.
func TestCacheBlobOneFetch(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, d, b := blobImage(t, 4<<20)
	u.push("library/big", "v1", img)
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	u.setFault(throttledBlob(d, b, 1<<20, release))
	reg := startCache(t, u, nil)
	url := reg.URL + "/v2/hub/library/big/blobs/" + d.String()

	const clients = 20
	started := make(chan struct{}, clients)
	type result struct {
		status int
		sum    string
		err    error
	}
	results := make(chan result, clients)
	for range clients {
		go func() {
			resp, err := http.Get(url)
			started <- struct{}{}
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			results <- result{status: resp.StatusCode, sum: sha256Hex(got), err: err}
		}()
	}
	// Every client has its answer's headers, so has joined the fetch,
	// before the upstream sends more than the first MiB.
	for range clients {
		<-started
	}
	close(release)
	for range clients {
		r := <-results
		if r.err != nil || r.status != http.StatusOK || "sha256:"+r.sum != d.String() {
			t.Errorf("client: status %d, content sha256:%s, err %v; want 200 and %s", r.status, r.sum, r.err, d)
		}
	}
	if n := u.count(http.MethodGet, "/blobs/"+d.String()); n != 1 {
		t.Errorf("%d upstream GETs of the blob for %d clients, want 1", n, clients)
	}
}

// TestCacheBlobClientAbort: a client hanging up mid-stream does not stop
// the fetch; the next clients get the blob from storage.
func TestCacheBlobClientAbort(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, d, b := blobImage(t, 3<<20)
	u.push("library/big", "v1", img)
	release := make(chan struct{})
	u.setFault(throttledBlob(d, b, 1<<20, release))
	reg := startCache(t, u, nil)
	url := reg.URL + "/v2/hub/library/big/blobs/" + d.String()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first GET: %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	close(release)

	// The second client gets the blob (from the fetch or from storage).
	// The last byte goes out once the digest matched, before the commit
	// to storage: a third GET right after may still join the fetch
	// (miss) rather than read storage (hit); either way the remote is
	// not asked again.
	resp2, got := get(t, http.MethodGet, url)
	if resp2.StatusCode != http.StatusOK || !bytes.Equal(got, b) {
		t.Fatalf("second GET: %d, %d bytes; want 200 and the blob", resp2.StatusCode, len(got))
	}
	resp3, got := get(t, http.MethodGet, url)
	if h := resp3.Header.Get("X-Portcullis-Cache"); resp3.StatusCode != http.StatusOK || (h != "hit" && h != "miss") || !bytes.Equal(got, b) {
		t.Errorf("third GET: %d, X-Portcullis-Cache %q; want 200 with the blob", resp3.StatusCode, h)
	}
	if n := u.count(http.MethodGet, "/blobs/"+d.String()); n != 1 {
		t.Errorf("%d upstream GETs of the blob, want 1: the aborted client's fetch was not kept", n)
	}
}

// TestCacheBlobCorrupt: a blob whose bytes do not match its digest is
// never stored: a small one is a 502 saying why, a large one a broken
// stream; the next GET fetches it again.
func TestCacheBlobCorrupt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		size int64
	}{
		{"small", 64 << 10},
		{"large", 3 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newCacheUpstream(t)
			img, d, b := blobImage(t, tt.size)
			u.push("library/app", "v1", img)
			bad := bytes.Clone(b)
			bad[len(bad)/2] ^= 0xff
			u.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
					return false
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(bad)
				return true
			})
			reg := startCache(t, u, nil)
			url := reg.URL + "/v2/hub/library/app/blobs/" + d.String()

			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			got, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tt.size <= 1<<20 {
				code, msg := ociError(t, got)
				if resp.StatusCode != http.StatusBadGateway || !strings.Contains(msg, "digest") || !strings.Contains(msg, "origin") {
					t.Errorf("corrupt small blob: %d %s %q; want 502 saying remote origin sent the wrong digest", resp.StatusCode, code, msg)
				}
			} else if readErr == nil && bytes.Equal(got, bad) || int64(len(got)) >= int64(len(b)) {
				t.Errorf("corrupt large blob: client received %d of %d bytes without error (%v)", len(got), len(b), readErr)
			}
			if exists(t, blobData(reg, d)) {
				t.Fatalf("corrupt blob stored")
			}
			resp, _ = get(t, http.MethodHead, url)
			if resp.Header.Get("X-Portcullis-Cache") == "hit" {
				t.Errorf("HEAD after the corrupt fetch: served from storage")
			}

			u.setFault(nil)
			resp, got = get(t, http.MethodGet, url)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, b) {
				t.Errorf("GET once the upstream is right: %d, %d bytes", resp.StatusCode, len(got))
			}
			if n := u.count(http.MethodGet, "/blobs/"+d.String()); n != 2 {
				t.Errorf("%d upstream GETs of the blob, want 2: the corrupt one was not fetched again", n)
			}
		})
	}
}

// TestCacheBlobLinked: a blob stored for one cached repository is linked
// into another after one upstream HEAD, without fetching it again; a blob
// stored only in a private repository, which the upstream lacks, is not
// served from the cache namespace.
func TestCacheBlobLinked(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, d, b := blobImage(t, 32<<10)
	u.push("library/a", "v1", img)
	u.push("library/b", "v1", img)
	reg := startCache(t, u, nil)

	resp, _ := get(t, http.MethodGet, reg.URL+"/v2/hub/library/a/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || !exists(t, blobData(reg, d)) {
		t.Fatalf("GET from hub/library/a: %d, stored %v", resp.StatusCode, exists(t, blobData(reg, d)))
	}
	u.reset()
	resp, got := get(t, http.MethodGet, reg.URL+"/v2/hub/library/b/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, b) || resp.Header.Get("X-Portcullis-Cache") != "hit" {
		t.Errorf("GET from hub/library/b: %d, %d bytes, X-Portcullis-Cache %q; want 200 hit with the blob",
			resp.StatusCode, len(got), resp.Header.Get("X-Portcullis-Cache"))
	}
	if heads, gets := u.count(http.MethodHead, "/v2/library/b/blobs/"), u.count(http.MethodGet, "/blobs/"); heads != 1 || gets != 0 {
		t.Errorf("linking sent %d HEADs and %d GETs upstream, want 1 and 0", heads, gets)
	}

	// A private blob: pushed to team/secret, not on the upstream.
	private, _ := random.Image(4096, 1)
	if err := remote.Write(mustRef(t, reg.Host+"/team/secret:v1"), private); err != nil {
		t.Fatal(err)
	}
	layers, _ := private.Layers()
	pd, _ := layers[0].Digest()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := get(t, method, reg.URL+"/v2/hub/library/a/blobs/"+pd.String())
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s of a private blob through the cache: %d, want 404", method, resp.StatusCode)
		}
		if method == http.MethodGet {
			if code, _ := ociError(t, body); code != "BLOB_UNKNOWN" {
				t.Errorf("GET of a private blob through the cache: code %s, want BLOB_UNKNOWN", code)
			}
		}
	}
	link := filepath.Join(reg.Config.FilesystemRoot(), "docker/registry/v2/repositories/hub/library/a/_layers", pd.Algorithm, pd.Hex, "link")
	if exists(t, link) {
		t.Errorf("private blob linked into the cache namespace")
	}
}

// TestCacheWritesRefused: writes into a cache namespace are 403 DENIED
// naming the cache and its remote, and never reach the remote.
func TestCacheWritesRefused(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	reg := startCache(t, u, nil)
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
	tests := []struct {
		name, method, path, body string
	}{
		{"manifest PUT", http.MethodPut, "/v2/hub/library/app/manifests/v1", manifest},
		{"upload POST", http.MethodPost, "/v2/hub/library/app/blobs/uploads/", ""},
		{"manifest DELETE", http.MethodDelete, "/v2/hub/library/app/manifests/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", ""},
		{"manifest PUT via ns", http.MethodPut, "/v2/library/app/manifests/v1?ns=docker.io", manifest},
		{"one-word name", http.MethodPut, "/v2/hub/app/manifests/v1", manifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, reg.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, msg := ociError(t, body)
			if resp.StatusCode != http.StatusForbidden || code != "DENIED" || !strings.Contains(msg, "hub/") || !strings.Contains(msg, "origin") {
				t.Errorf("%d %s %q; want 403 DENIED naming the cache hub and remote origin", resp.StatusCode, code, msg)
			}
		})
	}
	if n := u.count("", "/"); n != 0 {
		t.Errorf("%d upstream requests for refused writes, want 0", n)
	}
}

// TestCacheNamespaces: containerd's ?ns= selects the cache serving that
// host; an unknown ns is 404 NAME_UNKNOWN without dialling anything;
// Docker Hub's one-word names live under library/.
func TestCacheNamespaces(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, _ := random.Image(512, 1)
	want := u.push("library/alpine", "3.20", img)
	reg := startCache(t, u, nil)
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"ns of the cache", "/v2/library/alpine/manifests/3.20?ns=docker.io", http.StatusOK, ""},
		{"ns in upper case", "/v2/library/alpine/manifests/3.20?ns=Docker.IO", http.StatusOK, ""},
		{"ns and a one-word name", "/v2/alpine/manifests/3.20?ns=docker.io", http.StatusOK, ""},
		{"prefixed one-word name", "/v2/hub/alpine/manifests/3.20", http.StatusOK, ""},
		{"prefixed full name", "/v2/hub/library/alpine/manifests/3.20", http.StatusOK, ""},
		// A name of their own: the cache's background work on alpine
		// (completing the image, refreshing its referrers) asks the
		// upstream for other paths meanwhile.
		{"unknown ns", "/v2/library/elsewhere/manifests/3.20?ns=quay.io", http.StatusNotFound, "NAME_UNKNOWN"},
		{"unknown ns, blob", "/v2/library/elsewhere/blobs/" + want.String() + "?ns=ghcr.io", http.StatusNotFound, "NAME_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := u.count("", "/elsewhere/")
			resp, body := get(t, http.MethodGet, reg.URL+tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.code != "" {
				if code, _ := ociError(t, body); code != tt.code {
					t.Errorf("code %s, want %s", code, tt.code)
				}
				if n := u.count("", "/elsewhere/") - before; n != 0 {
					t.Errorf("%d upstream requests for an unknown ns, want 0", n)
				}
				return
			}
			if resp.Header.Get("Docker-Content-Digest") != want.String() {
				t.Errorf("digest %s, want %s", resp.Header.Get("Docker-Content-Digest"), want)
			}
		})
	}
	if n := u.count("", "/v2/alpine/"); n != 0 {
		t.Errorf("%d upstream requests for a one-word name, want them all under library/", n)
	}
	// Every route filled the one repository hub/library/alpine.
	tags, err := remote.List(mustRef(t, reg.Host+"/hub/library/alpine:x").Context())
	if err != nil || strings.Join(tags, ",") != "3.20" {
		t.Errorf("tags of hub/library/alpine: %v, %v", tags, err)
	}
}

// TestCacheAuth: with auth on, an anonymous read of a cache repository
// gets the challenge and nothing is asked of the remote.
func TestCacheAuth(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, d, _ := blobImage(t, 1024)
	u.push("library/app", "v1", img)
	key := filepath.Join(t.TempDir(), "key.pem")
	if err := token.GenerateKeyFile(key); err != nil {
		t.Fatal(err)
	}
	reg := startCache(t, u, func(c *config.Config) {
		c.Auth.Enabled = true
		c.Auth.Token.SigningKeyFile = key
	})
	for _, path := range []string{
		"/v2/hub/library/app/manifests/v1",
		"/v2/hub/library/app/blobs/" + d.String(),
		"/v2/library/app/manifests/v1?ns=docker.io",
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := get(t, method, reg.URL+path)
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("anonymous %s %s: %d, challenge %q; want 401 with a challenge", method, path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	if n := u.count("", "/"); n != 0 {
		t.Errorf("%d upstream requests for anonymous reads, want 0", n)
	}
}

// TestCachesAPI: /api/v1/caches lists each cache and its remote's state:
// the breaker open after repeated failures.
func TestCachesAPI(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	reg := startCache(t, u, func(c *config.Config) { c.Remotes[0].FailureThreshold = 2 })
	type status struct {
		Prefix      string   `json:"prefix"`
		Remote      string   `json:"remote"`
		URL         string   `json:"url"`
		Hosts       []string `json:"hosts"`
		TagTTL      string   `json:"tagTTL"`
		RemoteState struct {
			Available bool   `json:"available"`
			Failures  int    `json:"failures"`
			LastError string `json:"lastError"`
		} `json:"remoteState"`
	}
	caches := func() []status {
		t.Helper()
		resp, body := get(t, http.MethodGet, reg.URL+"/api/v1/caches")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/api/v1/caches: %d %s", resp.StatusCode, body)
		}
		var v struct{ Caches []status }
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v.Caches
	}
	cs := caches()
	if len(cs) != 1 || cs[0].Prefix != "hub" || cs[0].Remote != "origin" || cs[0].URL != u.url || cs[0].TagTTL != "5m0s" ||
		strings.Join(cs[0].Hosts, ",") != "docker.io" || !cs[0].RemoteState.Available {
		t.Fatalf("caches = %+v", cs)
	}

	u.setFault(func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	for _, tag := range []string{"a", "b", "c"} {
		resp, body := get(t, http.MethodGet, reg.URL+"/v2/hub/library/app/manifests/"+tag)
		if code, msg := ociError(t, body); resp.StatusCode != http.StatusBadGateway || !strings.Contains(msg, "origin") {
			t.Errorf("GET %s with the remote down: %d %s %q; want 502 naming origin", tag, resp.StatusCode, code, msg)
		}
	}
	if n := u.count("", "/"); n != 2 {
		t.Errorf("%d upstream requests, want 2: the open breaker should fail the third at once", n)
	}
	cs = caches()
	if st := cs[0].RemoteState; st.Available || st.Failures < 2 || !strings.Contains(st.LastError, "503") {
		t.Errorf("remote state after failures: %+v; want unavailable after 2 failures with the 503", st)
	}
}

// TestCacheBlobInFlightNotShared: a blob being fetched for one cached
// repository is served to a client of another only when the remote has
// it there too: a client cannot read by digest alone what the remote
// keeps in a repository it did not ask for.
func TestCacheBlobInFlightNotShared(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, d, b := blobImage(t, 2<<20)
	u.push("library/a", "v1", img)
	u.push("library/b", "v1", img)
	release := make(chan struct{})
	throttled := throttledBlob(d, b, 1<<20, release)
	u.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/library/c/") {
			// go-containerregistry's registry keeps blobs for all
			// repositories: library/c is made to lack it.
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		return throttled(w, r)
	})
	reg := startCache(t, u, nil)

	resp, err := http.Get(reg.URL + "/v2/hub/library/a/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET from hub/library/a: %d", resp.StatusCode)
	}
	// While it is fetched for library/a: library/c lacks it upstream.
	resp2, body := get(t, http.MethodGet, reg.URL+"/v2/hub/library/c/blobs/"+d.String())
	if code, _ := ociError(t, body); resp2.StatusCode != http.StatusNotFound || code != "BLOB_UNKNOWN" {
		t.Errorf("GET from hub/library/c while fetched for hub/library/a: %d %s, want 404 BLOB_UNKNOWN", resp2.StatusCode, code)
	}
	// library/b has it upstream: its client joins the fetch.
	done := make(chan []byte)
	go func() {
		resp, err := http.Get(reg.URL + "/v2/hub/library/b/blobs/" + d.String())
		if err != nil {
			done <- nil
			return
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		done <- got
	}()
	close(release)
	if got, _ := io.ReadAll(resp.Body); !bytes.Equal(got, b) {
		t.Errorf("hub/library/a client: %d bytes, want the blob", len(got))
	}
	if got := <-done; !bytes.Equal(got, b) {
		t.Errorf("hub/library/b client: %d bytes, want the blob", len(got))
	}
	if n := u.count(http.MethodGet, "/blobs/"+d.String()); n != 1 {
		t.Errorf("%d upstream GETs of the blob, want 1", n)
	}
	link := filepath.Join(reg.Config.FilesystemRoot(), "docker/registry/v2/repositories/hub/library/c/_layers", d.Algorithm, d.Hex, "link")
	if exists(t, link) {
		t.Errorf("blob linked into hub/library/c, which the remote does not have it in")
	}
}

// TestCacheStaleOverHTTP: a tag past its TTL is served with
// X-Portcullis-Cache: stale while the remote fails (and counted), unless
// staleIfError is 0s: then the client gets 502 naming the remote.
func TestCacheStaleOverHTTP(t *testing.T) {
	t.Parallel()
	down := func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	hang := func(_ http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done() // until the remote's response timeout gives up
		return true
	}
	tests := []struct {
		name  string
		stale time.Duration
		fault func(http.ResponseWriter, *http.Request) bool
	}{
		{"staleIfError 1h", time.Hour, down},
		{"staleIfError 1h, remote hangs", time.Hour, hang},
		{"staleIfError 0s", 0, down},
		{"staleIfError 0s, remote hangs", 0, hang},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newCacheUpstream(t)
			img, _ := random.Image(512, 1)
			want := u.push("library/app", "v1", img)
			reg := startCache(t, u, func(c *config.Config) {
				// Every read revalidates the tag: no clock to advance here.
				c.Cache[0].TagTTL = config.Duration(time.Nanosecond)
				stale := config.Duration(tt.stale)
				c.Cache[0].StaleIfError = &stale
				c.Remotes[0].Timeout = config.Duration(2 * time.Second)
			})
			url := reg.URL + "/v2/hub/library/app/manifests/v1"
			if resp, body := get(t, http.MethodGet, url); resp.StatusCode != http.StatusOK {
				t.Fatalf("first GET: %d %s", resp.StatusCode, body)
			}
			u.setFault(tt.fault)
			resp, body := get(t, http.MethodGet, url)
			if tt.stale == 0 {
				code, msg := ociError(t, body)
				if resp.StatusCode != http.StatusBadGateway || !strings.Contains(msg, "origin") {
					t.Errorf("GET with the remote down: %d %s %q; want 502 naming remote origin", resp.StatusCode, code, msg)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Portcullis-Cache") != "stale" || resp.Header.Get("Docker-Content-Digest") != want.String() {
				t.Errorf("GET with the remote down: %d, X-Portcullis-Cache %q, digest %s; want 200 stale %s",
					resp.StatusCode, resp.Header.Get("X-Portcullis-Cache"), resp.Header.Get("Docker-Content-Digest"), want)
			}
			_, metrics := get(t, http.MethodGet, reg.URL+"/metrics")
			if line := `portcullis_cache_requests_total{cache="hub",kind="manifest",result="stale"} 1`; !strings.Contains(string(metrics), line) {
				t.Errorf("/metrics lacks %s", line)
			}
		})
	}
}

// TestCacheReferrersAPI: the referrers API of a cached image lists the
// referrers copied from the remote with the image, and those added on the
// remote since, once tagTTL has passed.
func TestCacheReferrersAPI(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, _ := random.Image(512, 1)
	d := u.push("library/app", "v1", img)
	desc, err := partialDescriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	referrer := func(artifactType string) v1.Hash {
		base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.MediaType(artifactType)), types.OCIManifestSchema1)
		a := mutate.Subject(base, desc).(v1.Image)
		ad, _ := a.Digest()
		return u.push("library/app", ad.String(), a)
	}
	sbom := referrer("application/vnd.example.sbom")
	reg := startCache(t, u, func(c *config.Config) { c.Cache[0].TagTTL = config.Duration(time.Nanosecond) })
	if resp, body := get(t, http.MethodGet, reg.URL+"/v2/hub/library/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest: %d %s", resp.StatusCode, body)
	}
	listed := func() []string {
		t.Helper()
		resp, body := get(t, http.MethodGet, reg.URL+"/v2/hub/library/app/referrers/"+d.String())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("referrers: %d %s", resp.StatusCode, body)
		}
		var idx v1.IndexManifest
		if err := json.Unmarshal(body, &idx); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range idx.Manifests {
			out = append(out, m.Digest.String())
		}
		slices.Sort(out)
		return out
	}
	if got := listed(); !slices.Equal(got, []string{sbom.String()}) {
		t.Errorf("referrers after the first pull: %v, want [%s]", got, sbom)
	}
	sig := referrer("application/vnd.example.signature")
	want := []string{sbom.String(), sig.String()}
	slices.Sort(want)
	if got := listed(); !slices.Equal(got, want) {
		t.Errorf("referrers after tagTTL: %v, want %v", got, want)
	}
}
