package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/portcullis/portcullis/internal/gc"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// soakDuration is how long the writers push and delete while the collector
// runs in a loop.
const soakDuration = 2 * time.Minute

const (
	soakWriters   = 4
	soakPoolSize  = 8 // shared base layers
	soakKeepEvery = 4 // one image in four stays tagged; the others are deleted at once
)

// soakSkipMarkersEnv names the variable that turns the collector's markers
// off in TestGCSoakTwoReplicas.
const soakSkipMarkersEnv = "PORTCULLIS_SOAK_SKIP_MARKERS"

// soakReport is the part of `registry gc --json` the tests read.
type soakReport = gc.Report

// soakImage is an image a test pushed.
type soakImage struct {
	repo   string
	tag    string
	digest string   // manifest digest
	blobs  []string // config and layer digests
	pushed time.Time
	writer int
}

func (i soakImage) String() string {
	return fmt.Sprintf("%s:%s@%s (writer %d, pushed %s)", i.repo, i.tag, i.digest, i.writer, i.pushed.Format(time.RFC3339Nano))
}

// soakTarLayer is an uncompressed layer holding one file with data.
func soakTarLayer(data []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "data", Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), nil
}

// soakRandomLayer is a layer of size random bytes.
func soakRandomLayer(size int) (v1.Layer, error) {
	b := make([]byte, size)
	_, _ = crand.Read(b)
	return soakTarLayer(b)
}

// soakBuild makes an OCI image of layers and describes it as pushed to
// repo:tag.
func soakBuild(repo, tag string, layers ...v1.Layer) (v1.Image, soakImage, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, soakImage{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, soakImage{}, err
	}
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, soakImage{}, err
	}
	desc := soakImage{repo: repo, tag: tag, digest: d.String(), blobs: []string{cfg.String()}}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return nil, soakImage{}, err
		}
		desc.blobs = append(desc.blobs, ld.String())
	}
	return img, desc, nil
}

// soakErrorCode names the registry error code in a client error and the
// digest the error is about, if it names one.
func soakErrorCode(err error) (code, dgst string) {
	var te *transport.Error
	if !errors.As(err, &te) {
		return "other", ""
	}
	for _, d := range te.Errors {
		if d.Code == transport.BlobUnknownErrorCode || d.Code == transport.ManifestBlobUnknownErrorCode {
			return string(d.Code), fmt.Sprint(d.Detail)
		}
	}
	if len(te.Errors) > 0 {
		return string(te.Errors[0].Code), ""
	}
	return fmt.Sprintf("HTTP %d", te.StatusCode), ""
}

// soakRunGC runs `registry gc --json` once and returns its report and what
// it wrote to stderr.
func soakRunGC(ctx context.Context, env []string, configFile string) (soakReport, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, registryBin, "gc", "--config", configFile, "--json")
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return soakReport{}, stdout.String() + stderr.String(), fmt.Errorf("registry gc: %w", err)
	}
	var rep soakReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return soakReport{}, stdout.String() + stderr.String(), fmt.Errorf("registry gc --json output: %w", err)
	}
	return rep, stderr.String(), nil
}

// soakBusy reports whether a failed `registry gc` refused to start because
// another collection holds the lease (the CLI's documented refusal).
func soakBusy(out string) bool {
	return strings.Contains(out, "another collection is running")
}

// soakGCWhenFree runs `registry gc` until it is not refused for a held
// lease, at most limit long, and returns its report and the time it waited.
func soakGCWhenFree(t *testing.T, env []string, configFile string, limit time.Duration) (soakReport, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		rep, out, err := soakRunGC(context.Background(), env, configFile)
		if err == nil {
			return rep, time.Since(start)
		}
		if !soakBusy(out) || time.Since(start) > limit {
			t.Fatalf("after %s: %v\n%s", time.Since(start).Round(time.Second), err, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// soakTail returns the last n lines of s.
func soakTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// soakWhoDeleted says which collector runs deleted d, for failure reports.
func soakWhoDeleted(reports []soakReport, d string) string {
	var runs []string
	for _, r := range reports {
		for _, e := range r.Deleted {
			if string(e.Digest) == d {
				runs = append(runs, fmt.Sprintf("run %s (%s to %s) deleted %s %s%s (%s)",
					r.ID, r.Started.Format(time.RFC3339Nano), r.Finished.Format(time.RFC3339Nano), e.Kind, e.Repository, e.Digest, e.Reason))
			}
		}
	}
	if len(runs) == 0 {
		return "no collector run lists it as deleted"
	}
	return strings.Join(runs, "; ")
}

// soakLogLines returns, in short, at most n of the request and warning
// lines of a replica's logs that mention s.
func soakLogLines(replica, logs, s string, n int) []string {
	var out []string
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, s) {
			continue
		}
		var e struct {
			Time   string `json:"time"`
			Level  string `json:"level"`
			Msg    string `json:"msg"`
			Method string `json:"method"`
			Path   string `json:"path"`
			Status int    `json:"status"`
			Err    string `json:"err"`
		}
		switch {
		case json.Unmarshal([]byte(line), &e) != nil:
			out = append(out, replica+" "+strings.TrimSpace(line))
		case e.Msg == "request":
			out = append(out, fmt.Sprintf("%s %s %s %s %d", e.Time, replica, e.Method, e.Path, e.Status))
		case e.Level != "INFO" && e.Level != "DEBUG":
			out = append(out, fmt.Sprintf("%s %s %s %s %s", e.Time, replica, e.Level, e.Msg, e.Err))
		}
	}
	if len(out) > n {
		out = append(out[:n/2], append([]string{"..."}, out[len(out)-n/2:]...)...)
	}
	return out
}

// soakVerify pulls img from base as a client does: the manifest by tag must
// have the pushed digest, and every blob it lists must come back whole,
// with the size and digest the manifest says. It returns the digest of the
// first blob that does not.
func soakVerify(client *http.Client, base string, img soakImage) (string, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/v2/"+img.repo+"/manifests/"+img.tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", string(types.OCIManifestSchema1)+", "+string(types.DockerManifestSchema2))
	resp, err := client.Do(req)
	if err != nil {
		return img.digest, fmt.Errorf("get manifest: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return img.digest, fmt.Errorf("read manifest: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return img.digest, fmt.Errorf("get manifest: %d %s", resp.StatusCode, trim(body))
	}
	if got := soakDigest(body); got != img.digest {
		return img.digest, fmt.Errorf("manifest digest %s, pushed %s", got, img.digest)
	}
	var m v1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return img.digest, fmt.Errorf("manifest: %w", err)
	}
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		d := desc.Digest.String()
		resp, err := client.Get(base + "/v2/" + img.repo + "/blobs/" + d)
		if err != nil {
			return d, fmt.Errorf("get blob %s: %w", d, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return d, fmt.Errorf("get blob %s: %d", d, resp.StatusCode)
		}
		if err != nil {
			return d, fmt.Errorf("read blob %s: %w", d, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d || n != desc.Size {
			return d, fmt.Errorf("blob %s: got %d bytes with digest %s, want %d", d, n, got, desc.Size)
		}
	}
	return "", nil
}

func soakDigest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// soakTags lists every tag of repo, following Link pagination.
func soakTags(client *http.Client, base, repo string) ([]string, error) {
	var tags []string
	next := base + "/v2/" + repo + "/tags/list"
	for next != "" {
		resp, err := client.Get(next)
		if err != nil {
			return nil, err
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		if resp.StatusCode != http.StatusOK || err != nil {
			return nil, fmt.Errorf("tags of %s: %d %v", repo, resp.StatusCode, err)
		}
		tags = append(tags, page.Tags...)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			u := strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
			ref, err := url.Parse(u)
			if err != nil {
				return nil, fmt.Errorf("tags of %s: Link %q: %w", repo, link, err)
			}
			b, _ := url.Parse(base)
			next = b.ResolveReference(ref).String()
		}
	}
	return tags, nil
}

// soakCheckTags checks that the tags of repos are exactly those of kept:
// every kept image is still tagged, and no deleted one is.
func soakCheckTags(t *testing.T, base string, repos []string, kept []soakImage) {
	t.Helper()
	want := map[string]bool{}
	for _, img := range kept {
		want[img.repo+":"+img.tag] = true
	}
	for _, repo := range repos {
		tags, err := soakTags(http.DefaultClient, base, repo)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, tag := range tags {
			if !want[repo+":"+tag] {
				t.Errorf("%s:%s is tagged, but its image was deleted", repo, tag)
			}
			delete(want, repo+":"+tag)
		}
	}
	for rt := range want {
		t.Errorf("%s lost its tag", rt)
	}
}

// soakProxy is a reverse proxy that sends each request to the next replica
// in turn, so the requests of one push (and of one upload) land on
// different replicas.
type soakProxy struct {
	URL    string
	Addr   string
	next   atomic.Uint64
	served []atomic.Int64
}

func soakStartProxy(t *testing.T, replicas ...*Registry) *soakProxy {
	t.Helper()
	var targets []*url.URL
	for _, r := range replicas {
		u, err := url.Parse(r.URL())
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, u)
	}
	p := &soakProxy{served: make([]atomic.Int64, len(targets))}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			i := int((p.next.Add(1) - 1) % uint64(len(targets)))
			p.served[i].Add(1)
			pr.SetURL(targets[i])
			pr.Out.Host = pr.In.Host // Location headers name the proxy
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	p.Addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// soakPool holds the base layers the writers share. Now and then a writer
// replaces one with a new layer: the old one is garbage once the images
// using it are deleted, and until an image that stays tagged uses a new one,
// it is garbage whenever the images using it have just been deleted, while
// the next pushes reuse it.
type soakPool struct {
	mu     sync.Mutex
	layers [soakPoolSize]v1.Layer
}

func (p *soakPool) refresh(rng *mrand.Rand, slot int) error {
	l, err := soakRandomLayer(64<<10 + rng.IntN(448<<10))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.layers[slot] = l
	p.mu.Unlock()
	return nil
}

func (p *soakPool) pick(rng *mrand.Rand) []v1.Layer {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := rng.IntN(soakPoolSize)
	j := (i + 1 + rng.IntN(soakPoolSize-1)) % soakPoolSize
	return []v1.Layer{p.layers[i], p.layers[j]}
}

// soakStats is what the writers saw.
type soakStats struct {
	mu            sync.Mutex
	pushes        int
	deletes       int
	failedPushes  map[string]int // by error code
	failedDeletes int
	failures      []soakFailure // the first ones
	kept          []soakImage
}

// soakFailure is a failed push or delete.
type soakFailure struct {
	what       string
	start, end time.Time
	code       string
	digest     string // the digest the registry named, if any
	err        error
}

func (s *soakStats) fail(f soakFailure) {
	if len(s.failures) < 20 {
		s.failures = append(s.failures, f)
	}
}

// soakWrite pushes images to the proxy until the deadline: two base layers
// from the pool and a unique top layer, tagged; all but one in
// soakKeepEvery are deleted by digest right after their push, so that their
// base layers are unreferenced until the next push that reuses them.
func soakWrite(w int, host string, pool *soakPool, deadline time.Time, st *soakStats) error {
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
	repo := fmt.Sprintf("soak/r%d", w%2)
	for k := 0; time.Now().Before(deadline); k++ {
		if rng.IntN(3) == 0 {
			if err := pool.refresh(rng, rng.IntN(soakPoolSize)); err != nil {
				return err
			}
		}
		top, err := soakRandomLayer(4<<10 + rng.IntN(28<<10))
		if err != nil {
			return err
		}
		tag := fmt.Sprintf("w%d-%d", w, k)
		img, desc, err := soakBuild(repo, tag, append(pool.pick(rng), top)...)
		if err != nil {
			return err
		}
		desc.writer = w
		tagRef, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
		if err != nil {
			return err
		}
		start := time.Now()
		err = remote.Write(tagRef, img)
		desc.pushed = time.Now()
		if err != nil {
			code, d := soakErrorCode(err)
			st.mu.Lock()
			st.failedPushes[code]++
			st.fail(soakFailure{what: fmt.Sprintf("push %s (config and layers %v)", desc, desc.blobs),
				start: start, end: desc.pushed, code: code, digest: d, err: err})
			st.mu.Unlock()
			continue
		}
		st.mu.Lock()
		st.pushes++
		st.mu.Unlock()
		if k%soakKeepEvery == soakKeepEvery-1 {
			st.mu.Lock()
			st.kept = append(st.kept, desc)
			st.mu.Unlock()
			continue
		}
		digestRef, err := name.ParseReference(host+"/"+repo+"@"+desc.digest, name.Insecure)
		if err != nil {
			return err
		}
		start = time.Now()
		err = remote.Delete(digestRef)
		st.mu.Lock()
		if err != nil {
			st.failedDeletes++
			code, d := soakErrorCode(err)
			st.fail(soakFailure{what: "delete " + desc.String(), start: start, end: time.Now(), code: code, digest: d, err: err})
			// Still tagged: it must pull like the kept ones.
			st.kept = append(st.kept, desc)
		} else {
			st.deletes++
		}
		st.mu.Unlock()
	}
	return nil
}

// TestGCSoakTwoReplicas runs the collector in a loop, as a separate process,
// while four writers push images that share base layers through two
// replicas over one bucket, and delete most of them right away: the base
// layers of a deleted image are garbage at the moment the next push finds
// them present (HEAD) and skips their upload. Not one push may fail, and
// every image still tagged must pull whole.
//
// With PORTCULLIS_SOAK_SKIP_MARKERS=1 the registry runs with
// gc.unsafeSkipMarkers: the sweeper then deletes base layers a writer was
// just told exist, and this test fails (pushes refused with
// MANIFEST_BLOB_UNKNOWN, or tagged images missing a layer). That run shows
// the test catches the push-versus-sweep race the markers close.
func TestGCSoakTwoReplicas(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "upload-secret")
	writeFile(t, secret, "soak-upload-secret-0123456789abcdef")
	gc := "gc:\n  interval: 0s\n  grace: 0s\n"
	skipMarkers := os.Getenv(soakSkipMarkersEnv) == "1"
	if skipMarkers {
		gc += "  unsafeSkipMarkers: true\n"
		t.Logf("%s=1: the collector runs without markers; this test is expected to fail", soakSkipMarkersEnv)
	}
	opts := s3Options(srv, t, "http:\n  secretFile: "+secret+"\n"+gc)
	a := startRegistry(t, opts)
	b := startRegistry(t, opts)
	proxy := soakStartProxy(t, a, b)
	gcConfig := filepath.Join(dir, "gc.yml")
	writeFile(t, gcConfig, opts.config+"dataDir: "+filepath.Join(dir, "gc-data")+"\n")

	pool := &soakPool{}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for i := range soakPoolSize {
		if err := pool.refresh(rng, i); err != nil {
			t.Fatal(err)
		}
	}

	deadline := time.Now().Add(soakDuration)
	st := &soakStats{failedPushes: map[string]int{}}
	var wg sync.WaitGroup
	for w := range soakWriters {
		wg.Go(func() {
			if err := soakWrite(w, proxy.Addr, pool, deadline, st); err != nil {
				t.Errorf("writer %d: %v", w, err)
			}
		})
	}
	var (
		reports  []soakReport
		gcFailed []string
	)
	wg.Go(func() {
		for time.Now().Before(deadline) {
			rep, out, err := soakRunGC(context.Background(), opts.env, gcConfig)
			if err != nil {
				gcFailed = append(gcFailed, fmt.Sprintf("%v\n%s", err, soakTail(out, 10)))
				time.Sleep(time.Second)
				continue
			}
			reports = append(reports, rep)
		}
	})
	wg.Wait()

	// Once the writers stopped, one more run: it must still keep every
	// tagged image.
	final, out, err := soakRunGC(context.Background(), opts.env, gcConfig)
	if err != nil {
		t.Errorf("final collection: %v\n%s", err, out)
	}
	all := append(slices.Clone(reports), final)

	var bytesReclaimed int64
	var blobsDeleted, manifestsDeleted, spared int
	for _, r := range reports {
		bytesReclaimed += r.BytesReclaimed
		blobsDeleted += r.Blobs.Deleted
		manifestsDeleted += r.Manifests.Deleted
		spared += r.Blobs.Spared
		if r.Error != "" || r.DryRun {
			t.Errorf("run %s: dryRun=%v error %q", r.ID, r.DryRun, r.Error)
		}
	}
	t.Logf("writers: %d pushes, %d deleted, %d kept, failed pushes %v, failed deletes %d",
		st.pushes, st.deletes, len(st.kept), st.failedPushes, st.failedDeletes)
	t.Logf("collector: %d runs (%d failed), %d blobs and %d manifests deleted, %d bytes reclaimed, %d blobs spared; final run: %d blobs deleted, %d kept",
		len(reports), len(gcFailed), blobsDeleted, manifestsDeleted, bytesReclaimed, spared, final.Blobs.Deleted, final.Blobs.Kept)
	t.Logf("proxy: %d requests to replica a, %d to replica b", proxy.served[0].Load(), proxy.served[1].Load())

	for i, f := range gcFailed {
		if i == 3 {
			t.Errorf("... and %d more failed collector runs", len(gcFailed)-3)
			break
		}
		t.Errorf("collector run failed: %s", f)
	}
	for code, n := range st.failedPushes {
		t.Errorf("%d pushes failed with %s", n, code)
	}
	for _, f := range st.failures {
		t.Errorf("%s", soakExplain(f, all, map[string]*Registry{"a": a, "b": b}))
	}
	if st.pushes == 0 || st.deletes == 0 {
		t.Errorf("the writers pushed %d and deleted %d images: no soak", st.pushes, st.deletes)
	}
	if len(reports) == 0 || bytesReclaimed <= 0 || blobsDeleted <= 0 {
		t.Errorf("the collector reclaimed nothing while the writers ran: %d runs, %d blobs, %d bytes", len(reports), blobsDeleted, bytesReclaimed)
	}

	broken := 0
	for _, img := range st.kept {
		if d, err := soakVerify(http.DefaultClient, proxy.URL, img); err != nil {
			broken++
			if broken <= 10 {
				t.Errorf("%s", soakExplain(soakFailure{what: "pull " + img.String(), start: img.pushed, end: img.pushed, digest: d, err: err},
					all, map[string]*Registry{"a": a, "b": b}))
			}
		}
	}
	if broken > 0 {
		t.Errorf("%d of %d tagged images do not pull whole", broken, len(st.kept))
	}
	soakCheckTags(t, proxy.URL, []string{"soak/r0", "soak/r1"}, st.kept)
}

// soakExplain describes a failure with the collector runs under way
// meanwhile, which run deleted the digest the registry named, and what the
// replicas logged about it.
func soakExplain(f soakFailure, reports []soakReport, replicas map[string]*Registry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s from %s to %s: %v", f.what, f.start.Format(time.RFC3339Nano), f.end.Format(time.RFC3339Nano), f.err)
	for _, r := range reports {
		if r.Started.Before(f.end) && r.Finished.After(f.start) {
			fmt.Fprintf(&b, "\n  meanwhile run %s (%s to %s): %d blobs deleted, %d spared",
				r.ID, r.Started.Format(time.RFC3339Nano), r.Finished.Format(time.RFC3339Nano), r.Blobs.Deleted, r.Blobs.Spared)
		}
	}
	if f.digest == "" {
		return b.String()
	}
	fmt.Fprintf(&b, "\n  %s: %s", f.digest, soakWhoDeleted(reports, f.digest))
	var lines []string
	for name, r := range replicas {
		lines = append(lines, soakLogLines("replica "+name, r.Logs(), strings.TrimPrefix(f.digest, "sha256:"), 20)...)
	}
	slices.Sort(lines)
	for _, l := range lines {
		b.WriteString("\n    " + l)
	}
	return b.String()
}

// soakBlobPath is where the filesystem backend under root keeps blob d.
func soakBlobPath(root, d string) string {
	h := strings.TrimPrefix(d, "sha256:")
	return filepath.Join(root, "docker", "registry", "v2", "blobs", "sha256", h[:2], h, "data")
}

// soakPresent counts the blobs of ds still in the filesystem backend.
func soakPresent(root string, ds []string) int {
	n := 0
	for _, d := range ds {
		if _, err := os.Stat(soakBlobPath(root, d)); err == nil {
			n++
		}
	}
	return n
}

// soakPushAndDelete pushes n small images of unique content to reg, keeps
// one in ten tagged and deletes the others by digest. It returns the kept
// images and the blobs (manifests, configs, layers) of the deleted ones.
func soakPushAndDelete(t *testing.T, reg *Registry, batch, n int) (kept []soakImage, garbage []string) {
	t.Helper()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err := func() error {
					layer, err := soakRandomLayer(1<<10 + i%3<<10)
					if err != nil {
						return err
					}
					repo := fmt.Sprintf("kill/r%d", i%4)
					img, desc, err := soakBuild(repo, fmt.Sprintf("b%d-%d", batch, i), layer)
					if err != nil {
						return err
					}
					r, err := name.ParseReference(reg.Addr+"/"+repo+":"+desc.tag, name.Insecure)
					if err != nil {
						return err
					}
					if err := remote.Write(r, img); err != nil {
						return fmt.Errorf("push %s: %w", desc, err)
					}
					desc.pushed = time.Now()
					if i%10 == 0 {
						mu.Lock()
						kept = append(kept, desc)
						mu.Unlock()
						return nil
					}
					dr, err := name.ParseReference(reg.Addr+"/"+repo+"@"+desc.digest, name.Insecure)
					if err != nil {
						return err
					}
					if err := remote.Delete(dr); err != nil {
						return fmt.Errorf("delete %s: %w", desc, err)
					}
					mu.Lock()
					garbage = append(garbage, desc.digest)
					garbage = append(garbage, desc.blobs...)
					mu.Unlock()
					return nil
				}()
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return kept, garbage
}

// soakKillOutcome is how one attempt to kill a collection mid-sweep ended.
type soakKillOutcome struct {
	killed    bool   // SIGKILL sent once the first garbage blob was gone
	exitErr   error  // the process's exit when it was not killed
	output    string // what it wrote
	remaining int    // garbage blobs left afterwards
}

// soakKillMidSweep starts `registry gc` and SIGKILLs it as soon as one of
// the garbage blobs is gone.
func soakKillMidSweep(t *testing.T, configFile, root string, garbage []string) soakKillOutcome {
	t.Helper()
	cmd := exec.Command(registryBin, "gc", "--config", configFile, "--json")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var o soakKillOutcome
	limit := time.After(3 * time.Minute)
	for {
		select {
		case err := <-exited:
			o.exitErr = err
			o.output = out.String()
			o.remaining = soakPresent(root, garbage)
			return o
		case <-limit:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("registry gc ran 3 minutes without deleting any garbage blob:\n%s", out.String())
		default:
		}
		if soakPresent(root, garbage) < len(garbage) {
			// The sweep has begun: kill it a little later, at some
			// point of its course.
			time.Sleep(time.Duration(mrand.IntN(1000)) * time.Millisecond)
			_ = cmd.Process.Kill()
			<-exited
			o.killed = true
			o.output = out.String()
			o.remaining = soakPresent(root, garbage)
			return o
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGCKilledMidSweep SIGKILLs a collection while it deletes blobs: the
// next collection must start (once the dead one's lease expired), finish
// the job, and lose nothing that is tagged.
func TestGCKilledMidSweep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	// One delete at a time makes the sweep long enough to be caught.
	extra := "storage:\n  filesystem:\n    rootDirectory: " + root + "\ngc:\n  interval: 0s\n  grace: 0s\n  workers: 1\n"
	reg := startRegistry(t, startOptions{config: "version: 1\n" + extra})
	gcConfig := filepath.Join(dir, "gc.yml")
	writeFile(t, gcConfig, "version: 1\ndataDir: "+filepath.Join(dir, "gc-data")+"\n"+extra)

	var kept []soakImage
	var garbage []string
	var outcome soakKillOutcome
	busySince := time.Time{}
	for attempt := 1; ; {
		if attempt > 4 {
			t.Fatalf("no SIGKILL landed while the sweep was under way in %d attempts", attempt-1)
		}
		if len(garbage) == 0 || soakPresent(root, garbage) == 0 {
			k, g := soakPushAndDelete(t, reg, attempt, 200)
			kept = append(kept, k...)
			garbage = g
		}
		outcome = soakKillMidSweep(t, gcConfig, root, garbage)
		if !outcome.killed && outcome.exitErr != nil && soakBusy(outcome.output) {
			// An earlier attempt's kill left its lease.
			if busySince.IsZero() {
				busySince = time.Now()
			}
			if time.Since(busySince) > 90*time.Second {
				t.Fatalf("the lease of a killed collection held for more than 90s:\n%s", outcome.output)
			}
			time.Sleep(2 * time.Second)
			continue
		}
		busySince = time.Time{}
		if !outcome.killed && outcome.exitErr != nil {
			t.Fatalf("registry gc: %v\n%s", outcome.exitErr, outcome.output)
		}
		if outcome.killed && outcome.remaining > 0 {
			break
		}
		t.Logf("attempt %d: the collection finished before the kill (killed=%v, %d of %d garbage blobs left)",
			attempt, outcome.killed, outcome.remaining, len(garbage))
		attempt++
	}
	t.Logf("killed mid-sweep: %d of %d garbage blobs left", outcome.remaining, len(garbage))

	rep, waited := soakGCWhenFree(t, nil, gcConfig, 90*time.Second)
	t.Logf("the next collection started after %s: %d blobs and %d manifests deleted, %d blobs kept, %d bytes reclaimed, sweep %.2fs",
		waited.Round(time.Second), rep.Blobs.Deleted, rep.Manifests.Deleted, rep.Blobs.Kept, rep.BytesReclaimed, rep.SweepSeconds)
	if rep.Error != "" || rep.DryRun {
		t.Errorf("run %s: dryRun=%v error %q", rep.ID, rep.DryRun, rep.Error)
	}
	if rep.Blobs.Deleted < outcome.remaining {
		t.Errorf("the next collection deleted %d blobs; %d garbage blobs were left", rep.Blobs.Deleted, outcome.remaining)
	}
	if n := soakPresent(root, garbage); n != 0 {
		var left []string
		for _, d := range garbage {
			if _, err := os.Stat(soakBlobPath(root, d)); err == nil {
				left = append(left, d)
			}
		}
		t.Errorf("%d blobs of deleted images are still stored after the next collection: %v", n, left[:min(len(left), 10)])
	}
	for _, img := range kept {
		if d, err := soakVerify(http.DefaultClient, reg.URL(), img); err != nil {
			t.Errorf("pull %s: %v\n  %s", img, err, soakWhoDeleted([]soakReport{rep}, d))
		}
	}
	soakCheckTags(t, reg.URL(), []string{"kill/r0", "kill/r1", "kill/r2", "kill/r3"}, kept)
}
