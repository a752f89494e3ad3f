package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/bench/internal/benchimage"
	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// workload is a set of images pushed, then pulled, in one run.
type workload struct {
	name   string
	images []v1.Image
	bytes  int64 // layer bytes over all images
	// parallel is how many images are pushed (then pulled) at a time: 1,
	// one after another; len(images), all at once.
	parallel int
	// manifestRequests, when not zero, follows the push with that many
	// manifest GETs, then as many HEADs, on manifestConns connections,
	// instead of pulling the images.
	manifestRequests, manifestConns int
}

// result is what one run of a workload against one registry measured.
type result struct {
	push, pull time.Duration
	usage      // of the registry process, start to stop
	// minioCPU is the CPU time MinIO spent during the run; zero on the
	// filesystem.
	minioCPU time.Duration
	// s3Requests counts the S3 requests of the run by operation, with
	// -s3log only.
	s3Requests string
	// get and head are the manifest requests of a manifest workload.
	get, head loop
	// pushBusy and pullBusy are the fractions of the machine's CPU time
	// (all cores) that was busy during the push and the pull: the client,
	// the registry, the kernel's work for both and anything else running.
	pushBusy, pullBusy float64
}

// bigWorkload is one image of layers layers of layerSize random bytes each.
func bigWorkload(layers, layerSize int) (*workload, error) {
	ls := make([]v1.Layer, layers)
	for i := range ls {
		ls[i] = benchimage.RandomLayer(layerSize)
	}
	img, err := benchimage.New(ls...)
	if err != nil {
		return nil, err
	}
	return &workload{name: "big", images: []v1.Image{img}, bytes: int64(layers * layerSize), parallel: 1}, nil
}

// concurrentWorkload is count images of one layer of layerSize random bytes
// each, pushed and pulled all at once.
func concurrentWorkload(count, layerSize int) (*workload, error) {
	w := &workload{name: "concurrent", images: make([]v1.Image, count), bytes: int64(count * layerSize), parallel: count}
	for i := range w.images {
		img, err := benchimage.New(benchimage.RandomLayer(layerSize))
		if err != nil {
			return nil, err
		}
		w.images[i] = img
	}
	return w, nil
}

// smallWorkload is count images of one layer of layerSize random bytes each,
// pushed and pulled parallel at a time; its name is small for one at a
// time, smallpar otherwise.
func smallWorkload(count, layerSize, parallel int) (*workload, error) {
	name := "small"
	if parallel > 1 {
		name = "smallpar"
	}
	w := &workload{name: name, images: make([]v1.Image, count), bytes: int64(count * layerSize), parallel: parallel}
	for i := range w.images {
		img, err := benchimage.New(benchimage.RandomLayer(layerSize))
		if err != nil {
			return nil, err
		}
		w.images[i] = img
	}
	return w, nil
}

// manifestWorkload is one small image, pushed, then its manifest read by
// tag requests times with GET and as many times with HEAD, on conns
// connections at once.
func manifestWorkload(requests, conns int) (*workload, error) {
	w, err := smallWorkload(1, 4<<10, 1)
	if err != nil {
		return nil, err
	}
	w.name, w.manifestRequests, w.manifestConns = "manifest", requests, conns
	return w, nil
}

// run pushes every image of w to reg, then pulls every one back, reading
// each blob to the end so that the client verifies its digest and size.
func (w *workload) run(ctx context.Context, reg *registry) (result, error) {
	// A transport per run: no connection outlives its registry.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	defer tr.CloseIdleConnections()
	opts := []remote.Option{
		remote.WithTransport(tr),
		// A failure should fail the run, not be hidden in a slower time.
		remote.WithRetryPredicate(func(error) bool { return false }),
	}
	if reg.auth != nil {
		// The Docker token flow: a token per repository scope, cached by
		// the Pusher's and the Puller's transports, as real clients do.
		opts = append(opts, remote.WithAuth(reg.auth))
	}
	refs := make([]name.Reference, len(w.images))
	for i := range refs {
		ref, err := name.ParseReference(fmt.Sprintf("%s/bench/%s:%d", reg.addr, w.name, i), name.Insecure)
		if err != nil {
			return result{}, err
		}
		refs[i] = ref
	}

	var res result
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return result{}, err
	}
	cpu, err := benchproc.ReadCPUBusy()
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	err = w.each(func(i int) error {
		if err := pusher.Push(ctx, refs[i], w.images[i]); err != nil {
			return fmt.Errorf("push %s: %w", refs[i], err)
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	res.push = time.Since(start)
	if res.pushBusy, err = busySince(cpu); err != nil {
		return result{}, err
	}

	if w.manifestRequests > 0 {
		if res.get, res.head, err = manifestLoad(ctx, reg, tr, refs[0], w.manifestRequests, w.manifestConns); err != nil {
			return result{}, err
		}
		return res, nil
	}
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return result{}, err
	}
	if cpu, err = benchproc.ReadCPUBusy(); err != nil {
		return result{}, err
	}
	start = time.Now()
	err = w.each(func(i int) error {
		if err := pull(ctx, puller, refs[i], w.images[i]); err != nil {
			return fmt.Errorf("pull %s: %w", refs[i], err)
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	res.pull = time.Since(start)
	if res.pullBusy, err = busySince(cpu); err != nil {
		return result{}, err
	}
	return res, nil
}

// busySince returns the fraction of the machine's CPU time busy since
// from.
func busySince(from benchproc.CPUBusy) (float64, error) {
	now, err := benchproc.ReadCPUBusy()
	if err != nil {
		return 0, err
	}
	return now.Since(from), nil
}

// each calls f for the index of every image of w, w.parallel at a time;
// once one fails, no more are started.
func (w *workload) each(f func(i int) error) error {
	errs := make([]error, len(w.images))
	sem := make(chan struct{}, max(w.parallel, 1))
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
	)
	for i := range w.images {
		sem <- struct{}{}
		if failed.Load() {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if errs[i] = f(i); errs[i] != nil {
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pull fetches ref's manifest and config and reads its layers, in parallel
// as pull clients do, checking that the registry returned the image pushed.
func pull(ctx context.Context, p *remote.Puller, ref name.Reference, want v1.Image) error {
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return err
	}
	wantDigest, err := want.Digest()
	if err != nil {
		return err
	}
	if desc.Digest != wantDigest {
		return fmt.Errorf("manifest digest %s, pushed %s", desc.Digest, wantDigest)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil { // verified against the manifest
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Go(func() { errs[i] = readLayer(l) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readLayer reads l's blob to the end; the remote reader fails on a wrong
// digest or size.
func readLayer(l v1.Layer) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, rc)
	return errors.Join(err, rc.Close())
}
