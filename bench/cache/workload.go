package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// workload is one image, seeded into the upstream and pulled through each
// registry.
type workload struct {
	name      string // repository bench/<name> and the table's column
	img       v1.Image
	layers    int
	layerSize int64
}

func (w *workload) String() string {
	return fmt.Sprintf("%d × %d MiB", w.layers, w.layerSize>>20)
}

// bytes is the workload's layer bytes.
func (w *workload) bytes() int64 { return int64(w.layers) * w.layerSize }

// newWorkload is an image of layers layers of layerSize random bytes each.
func newWorkload(name string, layers int, layerSize int64) (*workload, error) {
	ls := make([]v1.Layer, layers)
	for i := range ls {
		ls[i] = randomLayer(layerSize)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), ls...)
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	// Compute every digest now, so that no hashing of ours happens while
	// a push is timed.
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("digest image: %w", err)
	}
	return &workload{name: name, img: img, layers: layers, layerSize: layerSize}, nil
}

// randomLayer is an uncompressed layer of n incompressible bytes. Its blob is
// not a tar; registries store layers without looking inside.
func randomLayer(n int64) v1.Layer {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return static.NewLayer(b, types.OCIUncompressedLayer)
}

// ref is the workload's image in repository prefix/bench/<name> of the
// registry at addr; prefix may be empty.
func (w *workload) ref(addr, prefix string) (name.Reference, error) {
	repo := "bench/" + w.name
	if prefix != "" {
		repo = prefix + "/" + repo
	}
	return name.ParseReference(addr+"/"+repo+":latest", name.Insecure)
}

// push writes the workload's image to ref and returns how long it took.
func (w *workload) push(ctx context.Context, ref name.Reference) (time.Duration, error) {
	tr := newTransport()
	defer tr.CloseIdleConnections()
	p, err := remote.NewPusher(remote.WithTransport(tr), noRetries())
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := p.Push(ctx, ref, w.img); err != nil {
		return 0, fmt.Errorf("push %s: %w", ref, err)
	}
	return time.Since(start), nil
}

// pullResult is what one pull measured.
type pullResult struct {
	// wall is the time from the manifest request to the last byte of the
	// last blob.
	wall time.Duration
	// ttfb is the time from the first layer's GET to the first byte of its
	// body.
	ttfb time.Duration
	// firstByte is the time from the manifest request to the first byte of
	// the first layer.
	firstByte time.Duration
	// lastGap is the longest wait, over the layers, between the last two
	// reads of a layer that returned data.
	lastGap time.Duration
	// served counts the responses by their X-Portcullis-Cache header
	// ("hit", "miss", "stale"; "none" without one).
	served map[string]int
}

// pull fetches the manifest of ref, checks it is the workload's image, then
// reads its config and all its layers at once, as pull clients do, to
// io.Discard; the client checks each blob's digest and size.
func (w *workload) pull(ctx context.Context, ref name.Reference) (pullResult, error) {
	tr := newTransport()
	defer tr.CloseIdleConnections()
	ct := &countingTransport{next: tr, served: map[string]int{}}
	// A job per blob: the config and every layer are fetched together.
	p, err := remote.NewPuller(remote.WithTransport(ct), noRetries(), remote.WithJobs(w.layers+1))
	if err != nil {
		return pullResult{}, err
	}
	wantDigest, err := w.img.Digest()
	if err != nil {
		return pullResult{}, err
	}
	start := time.Now()
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return pullResult{}, fmt.Errorf("get manifest %s: %w", ref, err)
	}
	if desc.Digest != wantDigest {
		return pullResult{}, fmt.Errorf("manifest digest %s, pushed %s", desc.Digest, wantDigest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return pullResult{}, fmt.Errorf("parse manifest: %w", err)
	}
	if len(m.Layers) != w.layers {
		return pullResult{}, fmt.Errorf("manifest has %d layers, want %d", len(m.Layers), w.layers)
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	var (
		res   pullResult
		errs  = make([]error, len(blobs))
		times = make([]blobTiming, len(blobs))
		wg    sync.WaitGroup
	)
	for i, b := range blobs {
		wg.Go(func() {
			t, err := readBlob(ctx, p, ref.Context().Digest(b.Digest.String()))
			if err != nil {
				errs[i] = fmt.Errorf("blob %s: %w", b.Digest, err)
				return
			}
			times[i] = t
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return pullResult{}, err
	}
	res.wall = time.Since(start)
	res.served = ct.snapshot()
	res.ttfb, res.firstByte = times[1].first.Sub(times[1].start), times[1].first.Sub(start) // the first layer
	for _, t := range times[1:] {
		res.lastGap = max(res.lastGap, t.lastGap)
	}
	return res, nil
}

// blobTiming is when the bytes of one blob arrived.
type blobTiming struct {
	start time.Time // the GET was sent
	first time.Time // the first byte of the body came
	// lastGap is the time between the last two reads that returned data:
	// how long the last bytes were held back, when a server holds them.
	lastGap time.Duration
}

// readBlob reads blob ref to the end and says when its bytes came.
func readBlob(ctx context.Context, p *remote.Puller, ref name.Digest) (blobTiming, error) {
	l, err := p.Layer(ctx, ref)
	if err != nil {
		return blobTiming{}, err
	}
	t := blobTiming{start: time.Now()}
	rc, err := l.Compressed() // the GET; verifies digest and size at EOF
	if err != nil {
		return blobTiming{}, err
	}
	defer rc.Close()
	buf := make([]byte, 256<<10)
	var last time.Time
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			now := time.Now()
			if t.first.IsZero() {
				t.first = now
			} else {
				t.lastGap = now.Sub(last)
			}
			last = now
		}
		if errors.Is(err, io.EOF) {
			if t.first.IsZero() {
				return blobTiming{}, errors.New("empty body")
			}
			return t, nil
		}
		if err != nil {
			return blobTiming{}, err
		}
	}
}

// newTransport is a transport for one push or pull: no connection outlives
// its registry.
func newTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	return tr
}

// noRetries makes a failure fail the run instead of hiding in a slower time.
func noRetries() remote.Option {
	return remote.WithRetryPredicate(func(error) bool { return false })
}

// countingTransport counts responses by their X-Portcullis-Cache header.
type countingTransport struct {
	next   http.RoundTripper
	mu     sync.Mutex
	served map[string]int
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	v := resp.Header.Get("X-Portcullis-Cache")
	if v == "" {
		v = "none"
	}
	t.mu.Lock()
	t.served[req.Method+" "+kindOf(req.URL.Path)+" "+v]++
	t.mu.Unlock()
	return resp, nil
}

func (t *countingTransport) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int, len(t.served))
	for k, v := range t.served {
		m[k] = v
	}
	return m
}

// kindOf says what a registry API path addresses.
func kindOf(path string) string {
	switch {
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	}
	return "other"
}

// summary prints counts in a stable order: "GET blob miss ×5, …".
func summary(served map[string]int) string {
	keys := make([]string, 0, len(served))
	for k := range served {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, served[k])
	}
	return strings.Join(parts, ", ")
}

// count is how many responses of kind ("manifest", "blob") carried the
// cache header value v.
func count(served map[string]int, kind, v string) int {
	n := 0
	for k, c := range served {
		f := strings.Fields(k)
		if len(f) == 3 && f[1] == kind && f[2] == v {
			n += c
		}
	}
	return n
}
