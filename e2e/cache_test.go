package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// cacheConfig is the remote and the pull-through cache (prefix hub,
// remote up) a test registry serves.
type cacheConfig struct {
	url                string // the upstream's base URL
	userFile, passFile string
	timeout            string // remotes[0].timeout; default the registry's
	failureThreshold   int
	hosts              []string // default [docker.io]
	listen             string   // cache[0].listen
	tagTTL             string   // default the registry's
	staleIfError       string
	extra              string // more top-level configuration
}

// yaml returns the registry's configuration file.
func (c cacheConfig) yaml() string {
	var b strings.Builder
	b.WriteString("version: 1\nremotes:\n  - name: up\n    url: " + c.url + "\n")
	if c.userFile != "" {
		b.WriteString("    usernameFile: " + c.userFile + "\n    passwordFile: " + c.passFile + "\n")
	}
	if c.timeout != "" {
		b.WriteString("    timeout: " + c.timeout + "\n")
	}
	if c.failureThreshold != 0 {
		fmt.Fprintf(&b, "    failureThreshold: %d\n", c.failureThreshold)
	}
	hosts := c.hosts
	if hosts == nil {
		hosts = []string{"docker.io"}
	}
	b.WriteString("cache:\n  - prefix: hub\n    remote: up\n    hosts: [" + strings.Join(hosts, ", ") + "]\n")
	if c.listen != "" {
		b.WriteString("    listen: " + c.listen + "\n")
	}
	if c.tagTTL != "" {
		b.WriteString("    tagTTL: " + c.tagTTL + "\n")
	}
	if c.staleIfError != "" {
		b.WriteString("    staleIfError: " + c.staleIfError + "\n")
	}
	b.WriteString(c.extra)
	return b.String()
}

// startCache runs a registry serving the cache c describes.
func startCache(t *testing.T, c cacheConfig) *Registry {
	t.Helper()
	return startRegistry(t, startOptions{config: c.yaml()})
}

// manifestAccept is what clients send when they pull a manifest.
const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// response is what a raw request to the cache got.
type response struct {
	status int
	header http.Header
	body   []byte
	err    error // a failed request or a broken body
}

// cacheHeader returns the X-Portcullis-Cache header.
func (r response) cacheHeader() string { return r.header.Get("X-Portcullis-Cache") }

// String describes the response for a failure message.
func (r response) String() string {
	return fmt.Sprintf("%d %s (X-Portcullis-Cache: %q, %d bytes, err %v)", r.status, trim(r.body), r.cacheHeader(), len(r.body), r.err)
}

// trim returns a body for a failure message: text up to 300 bytes, or
// only the size of binary content.
func trim(b []byte) string {
	if !utf8.Valid(b) || strings.ContainsFunc(string(b), func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }) {
		return fmt.Sprintf("<%d binary bytes>", len(b))
	}
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// do sends one request (manifests asked for with every manifest type) and
// reads the whole answer.
func do(t *testing.T, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{err: err, header: http.Header{}}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// errorCodes returns the OCI error codes and messages of an error body.
func errorCodes(body []byte) (codes, messages []string) {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	_ = json.Unmarshal(body, &e)
	for _, x := range e.Errors {
		codes, messages = append(codes, x.Code), append(messages, x.Message)
	}
	return codes, messages
}

// metricSum adds up the samples of a metric whose labels include every
// one of labels (each as printed: cache="hub").
func metricSum(t *testing.T, reg *Registry, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(scrapeMetrics(t, reg)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		ls, v, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(","+ls+",", ","+l+",") {
				continue next
			}
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += f
	}
	return sum
}

// cacheResults returns portcullis_cache_requests_total for cache hub.
func cacheResults(t *testing.T, reg *Registry, kind, result string) float64 {
	t.Helper()
	return metricSum(t, reg, "portcullis_cache_requests_total", `cache="hub"`, `kind="`+kind+`"`, `result="`+result+`"`)
}

// cacheStatus is one entry of GET /api/v1/caches.
type cacheStatus struct {
	Prefix      string   `json:"prefix"`
	Remote      string   `json:"remote"`
	URL         string   `json:"url"`
	Hosts       []string `json:"hosts"`
	RemoteState struct {
		Available bool   `json:"available"`
		Failures  int    `json:"failures"`
		LastError string `json:"lastError"`
	} `json:"remoteState"`
}

// caches returns the registry's GET /api/v1/caches.
func caches(t *testing.T, reg *Registry) []cacheStatus {
	t.Helper()
	resp, err := http.Get(reg.URL() + "/api/v1/caches")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Caches []cacheStatus `json:"caches"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("GET /api/v1/caches: %d %s", resp.StatusCode, trim(body))
	}
	return out.Caches
}

// sha256Of reads r to the end and returns its digest and the read error.
func sha256Of(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, err
}

// TestCacheReadOnly: pushes, tags and deletes into the cache's namespace
// are refused with DENIED, saying why, by raw requests and by crane.
func TestCacheReadOnly(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	d := startDistribution(t)
	img, _ := random.Image(1024, 1)
	want := seedImage(t, nil, d.Addr+"/library/ro:v1", img)
	mirror := freeAddr(t)
	reg := startCache(t, cacheConfig{url: d.URL(), listen: mirror})
	h := reg.Addr
	if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/hub/library/ro:v1")); got != want {
		t.Fatalf("pull through the cache: %s, want %s", got, want)
	}
	raw, _ := img.RawManifest()
	cases := []struct {
		name, method, path string
		body               string
		base               string // default the registry's URL
	}{
		{"start an upload", http.MethodPost, "/v2/hub/library/ro/blobs/uploads/", "", ""},
		{"mount a blob", http.MethodPost, "/v2/hub/library/ro/blobs/uploads/?mount=" + want + "&from=other/repo", "", ""},
		{"put a manifest", http.MethodPut, "/v2/hub/library/ro/manifests/v2", string(raw), ""},
		{"move a tag", http.MethodPut, "/v2/hub/library/ro/manifests/v1", string(raw), ""},
		{"delete a manifest", http.MethodDelete, "/v2/hub/library/ro/manifests/" + want, "", ""},
		{"delete a tag", http.MethodDelete, "/v2/hub/library/ro/manifests/v1", "", ""},
		{"delete a blob", http.MethodDelete, "/v2/hub/library/ro/blobs/" + want, "", ""},
		{"push a one-word name", http.MethodPost, "/v2/hub/newrepo/blobs/uploads/", "", ""},
		{"start an upload on the cache listener", http.MethodPost, "/v2/library/ro/blobs/uploads/", "", "http://" + mirror},
		{"put a manifest on the cache listener", http.MethodPut, "/v2/library/ro/manifests/v2", string(raw), "http://" + mirror},
		{"delete a manifest on the cache listener", http.MethodDelete, "/v2/library/ro/manifests/" + want, "", "http://" + mirror},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := c.base
			if base == "" {
				base = reg.URL()
			}
			req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
			if c.body != "" {
				req.Header.Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			codes, messages := errorCodes(body)
			if resp.StatusCode != http.StatusForbidden || !cmp.Equal(codes, []string{"DENIED"}) ||
				!strings.Contains(strings.Join(messages, " "), "pull-through cache") {
				t.Errorf("%s %s: %d %s, want 403 DENIED saying it is a pull-through cache", c.method, c.path, resp.StatusCode, trim(body))
			}
		})
	}
	t.Run("crane", func(t *testing.T) {
		tarPath := filepath.Join(t.TempDir(), "img.tar")
		writeTarball(t, tarPath, img)
		for _, args := range [][]string{
			{"push", "--insecure", tarPath, h + "/hub/library/ro:v2"},
			{"tag", "--insecure", h + "/hub/library/ro:v1", "v3"},
			{"delete", "--insecure", h + "/hub/library/ro@" + want},
			{"copy", "--insecure", h + "/hub/library/ro:v1", h + "/hub/library/copy:v1"},
		} {
			out, err := runErr(nil, crane, args...)
			if err == nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "pull-through cache") {
				t.Errorf("crane %s: %v\n%s\nwant DENIED, a pull-through cache", strings.Join(args, " "), err, out)
			}
		}
	})
	if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/hub/library/ro:v1")); got != want {
		t.Errorf("after the refused writes the cache serves %s, want %s", got, want)
	}
	if got := run(t, nil, crane, "ls", "--insecure", d.Addr+"/library/ro"); got != "v1\n" {
		t.Errorf("upstream tags after the refused writes: %q", got)
	}
}

// TestCacheNamespaceRouting: ?ns= picks the cache whose hosts hold it; an
// unknown ns is answered 404 at once and no remote is dialled.
func TestCacheNamespaceRouting(t *testing.T) {
	t.Parallel()
	d := startDistribution(t)
	img, _ := random.Image(1024, 1)
	want := seedImage(t, nil, d.Addr+"/library/ns:v1", img)
	p := startFaultProxy(t, d.URL())
	reg := startCache(t, cacheConfig{url: p.URL(), hosts: []string{"docker.io", "registry-1.docker.io"}})
	unknown := []string{
		"/v2/library/ns/manifests/v1?ns=quay.io",
		"/v2/library/ns/manifests/v1?ns=127.0.0.1:" + strings.Split(d.Addr, ":")[1],
		"/v2/library/ns/manifests/v1?ns=169.254.169.254",
		"/v2/library/ns/manifests/" + want + "?ns=ghcr.io",
		"/v2/library/ns/blobs/" + want + "?ns=gcr.io",
		"/v2/library/ns/tags/list?ns=quay.io",
	}
	check := func(when string) {
		for _, path := range unknown {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				if r := do(t, method, reg.URL()+path); r.status != http.StatusNotFound {
					t.Errorf("%s %s %s: %v, want 404", when, method, path, r)
				}
			}
		}
	}
	check("before any pull:")
	if n, c := p.total(), p.acceptedConns(); n != 0 || c != 0 {
		t.Errorf("unknown ns reached the upstream: %d requests on %d connections\n%s", n, c, p.requestLog())
	}
	for _, ns := range []string{"docker.io", "registry-1.docker.io"} {
		if r := do(t, http.MethodGet, reg.URL()+"/v2/library/ns/manifests/v1?ns="+ns); r.status != http.StatusOK || digest.FromBytes(r.body).String() != want {
			t.Errorf("GET /v2/library/ns/manifests/v1?ns=%s: %v, want %s", ns, r, want)
		}
	}
	if p.total() == 0 {
		t.Error("the known ns never reached the upstream")
	}
	// The cache goes on completing the image it pulled (blobs, referrers):
	// count only what the unknown-ns requests name, which that work never
	// asks for (a tag, the manifest by digest, the manifest as a blob, the
	// tag list).
	asked := func() int {
		n := 0
		for _, path := range []string{"/v2/library/ns/manifests/v1", "/v2/library/ns/manifests/" + want,
			"/v2/library/ns/blobs/" + want, "/v2/library/ns/tags/list"} {
			n += p.count("", path)
		}
		return n
	}
	before, snap := asked(), p.snapshot()
	check("after a pull:")
	if got := asked(); got != before {
		t.Errorf("unknown ns after a pull: the upstream saw %d more requests for those paths:\n%s", got-before, p.requestsSince(snap))
	}
}

// TestCacheStaleIfError: past its TTL a tag follows the upstream; with the
// upstream refusing connections, it is served stale (unless staleIfError
// is 0s), and pulls by digest (the tag's content now and before) are
// served without asking the upstream at all.
func TestCacheStaleIfError(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	d := startDistribution(t)
	img, _ := random.Image(4096, 2)
	first := seedImage(t, nil, d.Addr+"/library/stale:v1", img)
	p := startFaultProxy(t, d.URL())
	reg := startCache(t, cacheConfig{url: p.URL(), tagTTL: "1s", staleIfError: "168h"})
	h := reg.Addr
	run(t, nil, crane, "pull", "--insecure", h+"/hub/library/stale:v1", filepath.Join(t.TempDir(), "first.tar"))

	// Past its TTL a tag is checked again: moved upstream, it moves here.
	next, _ := random.Image(4096, 2)
	want := seedImage(t, nil, d.Addr+"/library/stale:v1", next)
	manifest := reg.URL() + "/v2/hub/library/stale/manifests/v1"
	var last response
	if !eventually(20*time.Second, func() bool {
		last = do(t, http.MethodGet, manifest)
		return last.status != http.StatusOK || digest.FromBytes(last.body).String() == want
	}) || last.status != http.StatusOK {
		t.Fatalf("GET %s after the tag moved upstream: %v, want 200 %s within 20s (tagTTL 1s)", manifest, last, want)
	}
	run(t, nil, crane, "pull", "--insecure", h+"/hub/library/stale:v1", filepath.Join(t.TempDir(), "next.tar"))
	// staleIfError: 0s turns stale serving off. That cache has a proxy of
	// its own: its background work does not count against the other's.
	strictProxy := startFaultProxy(t, d.URL())
	strict := startCache(t, cacheConfig{url: strictProxy.URL(), tagTTL: "1s", staleIfError: "0s"})
	strictManifest := strict.URL() + "/v2/hub/library/stale/manifests/v1"
	if r := do(t, http.MethodGet, strictManifest); r.status != http.StatusOK || digest.FromBytes(r.body).String() != want {
		t.Fatalf("GET %s: %v, want %s", strictManifest, r, want)
	}

	p.setMode(refuse)
	strictProxy.setMode(refuse)
	staleBefore := cacheResults(t, reg, "manifest", "stale")
	if !eventually(20*time.Second, func() bool {
		last = do(t, http.MethodGet, manifest)
		return last.status != http.StatusOK || last.cacheHeader() == "stale"
	}) || last.status != http.StatusOK || digest.FromBytes(last.body).String() != want {
		t.Fatalf("GET %s with the upstream down, past the tag TTL: %v, want 200 stale %s", manifest, last, want)
	}
	if got := cacheResults(t, reg, "manifest", "stale"); got <= staleBefore {
		t.Errorf(`portcullis_cache_requests_total{cache="hub",kind="manifest",result="stale"} = %v, was %v`, got, staleBefore)
	}
	if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/hub/library/stale:v1")); got != want {
		t.Errorf("crane digest by tag with the upstream down: %s, want %s", got, want)
	}

	accepted, requests, before := p.acceptedConns(), p.total(), p.snapshot()
	tarPath := filepath.Join(t.TempDir(), "by-digest.tar")
	for _, d := range []string{first, want} {
		run(t, nil, crane, "pull", "--insecure", h+"/hub/library/stale@"+d, tarPath)
		if r := do(t, http.MethodGet, reg.URL()+"/v2/hub/library/stale/manifests/"+d); r.status != http.StatusOK || r.cacheHeader() != "hit" {
			t.Errorf("GET by digest %s with the upstream down: %v, want 200 hit", d, r)
		}
	}
	if a, n := p.acceptedConns(), p.total(); a != accepted || n != requests {
		t.Errorf("pull by digest with the upstream down dialled it: %d connections, %d requests, want 0:\n%s", a-accepted, n-requests, p.requestsSince(before))
	}

	if !eventually(20*time.Second, func() bool {
		last = do(t, http.MethodGet, strictManifest)
		return last.status != http.StatusOK || last.cacheHeader() == "stale"
	}) || last.status < 500 || last.cacheHeader() == "stale" {
		t.Errorf("GET %s with the upstream down, past the tag TTL, staleIfError 0s: %v, want a 5xx", strictManifest, last)
	}
}

// TestCacheConcurrentMiss: 50 clients ask at once for a 64 MiB blob the
// cache does not hold, over an upstream throttled to 32 MiB/s: the
// upstream sees one GET, every client gets the whole blob.
func TestCacheConcurrentMiss(t *testing.T) {
	t.Parallel()
	d := startDistribution(t)
	data, dg := randomBlob(t, 64<<20)
	seedBlobArtifact(t, d.URL(), "library/big", "v1", data)
	p := startFaultProxy(t, d.URL())
	p.throttle(32 << 20)
	reg := startCache(t, cacheConfig{url: p.URL()})
	if r := do(t, http.MethodGet, reg.URL()+"/v2/hub/library/big/manifests/v1"); r.status != http.StatusOK {
		t.Fatalf("manifest: %v", r)
	}
	const clients = 50
	type result struct {
		status  int
		digest  string
		n       int64
		err     error
		xheader string
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	start := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: clients}}
	for i := range clients {
		wg.Go(func() {
			<-start
			resp, err := client.Get(reg.URL() + "/v2/hub/library/big/blobs/" + dg.String())
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			results[i].status, results[i].xheader = resp.StatusCode, resp.Header.Get("X-Portcullis-Cache")
			results[i].digest, results[i].n, results[i].err = sha256Of(resp.Body)
		})
	}
	close(start)
	wg.Wait()
	misses := 0
	for i, r := range results {
		if r.err != nil || r.status != http.StatusOK || r.digest != dg.String() || r.n != int64(len(data)) {
			t.Errorf("client %d: %d, %d bytes, %s, err %v; want 200 and %s", i, r.status, r.n, r.digest, r.err, dg)
		}
		switch r.xheader {
		case "miss":
			misses++
		case "hit":
		default:
			t.Errorf("client %d: X-Portcullis-Cache %q", i, r.xheader)
		}
	}
	t.Logf("%d of %d clients were served during the fetch (miss)", misses, clients)
	if misses < 2 {
		t.Errorf("%d clients were served during the fetch, want at least 2 sharing it: the blob was stored before they asked", misses)
	}
	if n := p.blobGets(dg.String()); n != 1 {
		t.Errorf("the upstream saw %d GETs of the blob, want 1\n%s", n, p.requestLog())
	}
	if n := d.gets("/blobs/" + dg.String()); n != 1 {
		t.Errorf("the upstream's access log shows %d GETs of the blob, want 1", n)
	}
}

// TestCacheClientAbort: a client that gives up during a miss does not stop
// the fetch: the blob is stored, and later pulls never ask the upstream.
func TestCacheClientAbort(t *testing.T) {
	t.Parallel()
	d := startDistribution(t)
	data, dg := randomBlob(t, 16<<20)
	seedBlobArtifact(t, d.URL(), "library/abort", "v1", data)
	p := startFaultProxy(t, d.URL())
	p.throttle(8 << 20)
	reg := startCache(t, cacheConfig{url: p.URL()})
	if r := do(t, http.MethodGet, reg.URL()+"/v2/hub/library/abort/manifests/v1"); r.status != http.StatusOK {
		t.Fatalf("manifest: %v", r)
	}
	blob := reg.URL() + "/v2/hub/library/abort/blobs/" + dg.String()
	resp, err := http.Get(blob)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Portcullis-Cache") != "miss" {
		t.Fatalf("GET %s: %d, X-Portcullis-Cache %q; want 200 and a miss", blob, resp.StatusCode, resp.Header.Get("X-Portcullis-Cache"))
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading the first 64 KiB: %v", err)
	}
	resp.Body.Close()

	// The next GET joins the fetch still under way, or finds it done.
	again := do(t, http.MethodGet, blob)
	if again.status != http.StatusOK || again.err != nil || digest.FromBytes(again.body) != dg {
		t.Errorf("GET after the abort: %v", again)
	}
	if n := p.blobGets(dg.String()); n != 1 {
		t.Errorf("upstream blob GETs after the abort and one more GET: %d, want 1\n%s", n, p.requestLog())
	}
	// The copy into storage ends just after the last byte reached the
	// clients: the blob is a hit from then on.
	third := do(t, http.MethodGet, blob)
	for deadline := time.Now().Add(10 * time.Second); third.cacheHeader() != "hit" && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		third = do(t, http.MethodGet, blob)
	}
	if third.status != http.StatusOK || digest.FromBytes(third.body) != dg || third.cacheHeader() != "hit" {
		t.Errorf("GET once stored: %v, want 200 hit", third)
	}
	if n := p.blobGets(dg.String()); n != 1 {
		t.Errorf("upstream blob GETs in all: %d, want 1", n)
	}
}

// TestCacheBadUpstreamBytes: a blob body that does not match its digest,
// or breaks off, fails the client and stores nothing; once the upstream
// sends the right bytes the same pull works.
func TestCacheBadUpstreamBytes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		size  int
		fault func(p *faultProxy)
		want  int // the status a client must get; 0: a failure of any kind
	}{
		{"small blob corrupted", 4 << 10, func(p *faultProxy) { p.setMode(corruptBlobs) }, http.StatusBadGateway},
		{"large blob corrupted", 8 << 20, func(p *faultProxy) { p.setMode(corruptBlobs) }, 0},
		{"large blob cut off", 8 << 20, func(p *faultProxy) { p.resetBlobsAfter(1 << 20) }, 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startDistribution(t)
			data, dg := randomBlob(t, c.size)
			repo := fmt.Sprintf("library/bad%d", i)
			seedBlobArtifact(t, d.URL(), repo, "v1", data)
			p := startFaultProxy(t, d.URL())
			reg := startCache(t, cacheConfig{url: p.URL()})
			if r := do(t, http.MethodGet, reg.URL()+"/v2/hub/"+repo+"/manifests/v1"); r.status != http.StatusOK {
				t.Fatalf("manifest: %v", r)
			}
			c.fault(p)
			blob := reg.URL() + "/v2/hub/" + repo + "/blobs/" + dg.String()
			r := do(t, http.MethodGet, blob)
			switch {
			case c.want != 0:
				if r.status != c.want || !strings.Contains(strings.ToLower(string(r.body)), "digest") {
					t.Errorf("GET %s from a bad upstream: %v, want %d naming the digest mismatch", blob, r, c.want)
				}
			case r.status == http.StatusOK && r.err == nil:
				t.Errorf("GET %s from a bad upstream: a whole response (%d bytes, digest match %v), want an error or a broken stream",
					blob, len(r.body), digest.FromBytes(r.body) == dg)
			}
			// Nothing was stored. A HEAD of a blob the cache lacks is answered
			// from the upstream, so refuse the upstream's connections: only
			// the cache's own storage could answer it now.
			p.setMode(refuse)
			if head := do(t, http.MethodHead, blob); head.status == http.StatusOK {
				t.Errorf("HEAD %s after the failed fetch, the upstream refused: %v, want no blob (nothing stored)", blob, head)
			}
			gets := p.blobGets(dg.String())
			p.setMode(passThrough)
			// A request may still join a fetch begun while the upstream was
			// bad (the cache completes a cached image in the background):
			// the pull works once such a fetch is over.
			var good response
			if !eventually(20*time.Second, func() bool {
				good = do(t, http.MethodGet, blob)
				return good.status == http.StatusOK && good.err == nil && digest.FromBytes(good.body) == dg
			}) {
				t.Fatalf("GET %s once the upstream is right: %v after 20s, want the blob", blob, good)
			}
			if n := p.blobGets(dg.String()); n <= gets {
				t.Errorf("the blob was served once the upstream was right with no new upstream GET: it was stored from bad bytes\n%s", p.requestLog())
			}
		})
	}
}

// TestCacheBreaker: an upstream that accepts connections and never answers
// is called until failureThreshold requests have timed out, then no more:
// ten misses in a row do not each wait for the timeout.
func TestCacheBreaker(t *testing.T) {
	t.Parallel()
	d := startDistribution(t)
	p := startFaultProxy(t, d.URL())
	p.setMode(hangAfterAccept)
	const threshold = 2
	reg := startCache(t, cacheConfig{url: p.URL(), timeout: "2s", failureThreshold: threshold})
	errorsBefore := cacheResults(t, reg, "manifest", "error")
	for i := range 10 {
		path := fmt.Sprintf("/v2/hub/library/app/manifests/missing-%d", i)
		if r := do(t, http.MethodGet, reg.URL()+path); r.status < 500 {
			t.Errorf("GET %s with the upstream hanging: %v, want a 5xx", path, r)
		}
	}
	t.Logf("10 misses with the upstream hanging: %d connections accepted, %d requests", p.acceptedConns(), p.total())
	if got := p.acceptedConns(); got > 2*threshold {
		t.Errorf("the upstream accepted %d connections for 10 misses, want at most %d (failureThreshold %d, then the breaker opens)", got, 2*threshold, threshold)
	}
	if got := cacheResults(t, reg, "manifest", "error") - errorsBefore; got < 10 {
		t.Errorf(`portcullis_cache_requests_total{cache="hub",kind="manifest",result="error"} grew by %v, want 10`, got)
	}
	cs := caches(t, reg)
	if len(cs) != 1 || cs[0].RemoteState.Available || cs[0].RemoteState.Failures < threshold || cs[0].RemoteState.LastError == "" {
		t.Errorf("/api/v1/caches with the breaker open: %+v, want unavailable, at least %d failures and the last error", cs, threshold)
	}
}

// TestCacheCredentials: the remote's credentials come from files that are
// read again when they change: a cache started with a wrong password pulls
// once the file holds the right one, without a restart. Neither password
// shows in the logs or the status API.
func TestCacheCredentials(t *testing.T) {
	t.Parallel()
	u := startAuthUpstream(t)
	want := seedImage(t, u.seedEnv, u.reg.Addr+"/library/cred:v1", runnableImage(t, "credentials"))
	const wrong = "wrong-password-4711"
	writeFile(t, u.passFile, wrong+"\n")
	reg := startCache(t, cacheConfig{url: u.reg.URL(), userFile: u.userFile, passFile: u.passFile})
	manifest := reg.URL() + "/v2/hub/library/cred/manifests/v1"
	if r := do(t, http.MethodGet, manifest); r.status == http.StatusOK {
		t.Fatalf("GET %s with a wrong password for the remote: %v", manifest, r)
	} else {
		t.Logf("GET with a wrong password for the remote: %v; /api/v1/caches: %+v", r, caches(t, reg))
	}

	writeFile(t, u.passFile, "bob-pw\n")
	var last response
	if !eventually(30*time.Second, func() bool {
		last = do(t, http.MethodGet, manifest)
		return last.status == http.StatusOK
	}) || digest.FromBytes(last.body).String() != want {
		t.Fatalf("GET %s after the password file was corrected: %v, want %s within 30s", manifest, last, want)
	}

	resp, err := http.Get(reg.URL() + "/api/v1/caches")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{wrong, "bob-pw"} {
		if strings.Contains(reg.Logs(), secret) || strings.Contains(string(status), secret) {
			t.Errorf("the password %q shows in the logs or in /api/v1/caches", secret)
		}
	}
}
