package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/bench/internal/benchimage"
)

// pendingResult is what the pending workload measured.
type pendingResult struct {
	events int
	// put is how long the tag PUTs at A took, with B down.
	put time.Duration
	// idleRSS is A's RSS before the PUTs; peakRSS its peak until B was
	// started; steadyRSS the median of its RSS over the settle period
	// after the PUTs, with every event pending; pendingSeen what A's
	// status said then.
	idleRSS, peakRSS, steadyRSS int64
	pendingSeen                 int
	// firstTag is how long after B was ready the first tag arrived; drain
	// how long until A had nothing pending; drainPeakRSS and drainCPU A's
	// peak RSS and CPU time over the drain; atB the tags B lists after.
	firstTag, drain time.Duration
	drainPeakRSS    int64
	drainCPU        time.Duration
	atB             int
	load            float64
}

// pendingRun stops B, PUTs events tags onto distinct small manifests at A
// (8 at a time), lets A settle for settle with them pending, then starts B
// and waits until A has nothing pending.
func (b *bench) pendingRun(ctx context.Context, events int, settle time.Duration) (res pendingResult, err error) {
	p, a, bc, err := b.session(ctx, viaRule)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, p.remove(context.WithoutCancel(ctx)), a.close(), bc.close()) }()
	const repo = "repl/pending"
	res.events, res.load = events, loadavg()
	if err := p.b.stop(); err != nil {
		return res, err
	}

	// One image's blobs, by digest; then events manifests that differ by
	// an annotation, each PUT by a tag of its own.
	img, err := benchimage.New(benchimage.RandomLayer(1 << 10))
	if err != nil {
		return res, err
	}
	d, err := img.Digest()
	if err != nil {
		return res, err
	}
	if err := a.push(ctx, repo, d.String(), img); err != nil {
		return res, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return res, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return res, err
	}
	var base map[string]any
	if err := json.Unmarshal(raw, &base); err != nil {
		return res, err
	}
	bodies := make([][]byte, events)
	for i := range bodies {
		base["annotations"] = map[string]string{"org.example.bench.index": fmt.Sprint(i)}
		if bodies[i], err = json.Marshal(base); err != nil {
			return res, err
		}
	}

	if res.idleRSS, err = p.a.rss(); err != nil {
		return res, err
	}
	samples := &rssSampler{}
	stopSampling := samples.start(p.a, 200*time.Millisecond)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, body := range bodies {
		g.Go(func() error { return a.putManifest(gctx, repo, fmt.Sprintf("t%05d", i), mt, body) })
	}
	if err := g.Wait(); err != nil {
		stopSampling()
		return res, err
	}
	res.put = time.Since(start)
	b.progress("pending: %d tags PUT at A in %v with B down; settling for %v", events, res.put.Round(time.Millisecond), settle)
	settled := time.Now()
	select {
	case <-ctx.Done():
		stopSampling()
		return res, ctx.Err()
	case <-time.After(settle):
	}
	stopSampling()
	res.steadyRSS = samples.median(settled.Add(settle / 2))
	if res.peakRSS, err = p.a.peak(); err != nil {
		return res, err
	}
	if res.pendingSeen, err = a.pending(ctx); err != nil {
		return res, err
	}

	if err := p.a.resetPeak(); err != nil {
		return res, err
	}
	cpu0, err := p.a.cpu()
	if err != nil {
		return res, err
	}
	if err := p.b.start(ctx); err != nil {
		return res, err
	}
	start = time.Now()
	b.progress("pending: %d pending at A; B started", res.pendingSeen)
	for {
		n, err := a.pending(ctx)
		if err != nil {
			return res, err
		}
		if res.firstTag == 0 {
			if tags, err := bc.tags(ctx, repo); err != nil {
				return res, err
			} else if len(tags) > 0 {
				res.firstTag = time.Since(start)
			}
		}
		if n == 0 {
			res.drain = time.Since(start)
			break
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("drain: %d still pending: %w", n, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	if res.drainPeakRSS, err = p.a.peak(); err != nil {
		return res, err
	}
	cpu1, err := p.a.cpu()
	if err != nil {
		return res, err
	}
	res.drainCPU = cpu1 - cpu0
	tags, err := bc.tags(ctx, repo)
	if err != nil {
		return res, err
	}
	res.atB = len(tags)
	if res.atB != events {
		return res, fmt.Errorf("B lists %d tags of %s after the drain, want %d", res.atB, repo, events)
	}
	return res, nil
}

// rssSampler records a site's RSS at an interval.
type rssSampler struct {
	mu  sync.Mutex
	at  []time.Time
	rss []int64
}

// start samples s every interval until the returned stop is called.
func (r *rssSampler) start(s *site, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if v, err := s.rss(); err == nil {
				r.mu.Lock()
				r.at, r.rss = append(r.at, time.Now()), append(r.rss, v)
				r.mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// median is the median RSS sampled from since on.
func (r *rssSampler) median(since time.Time) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v []int64
	for i, t := range r.at {
		if !t.Before(since) {
			v = append(v, r.rss[i])
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}
