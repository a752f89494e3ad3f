package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// lagResult is what the lag workload measured: for each image, the time
// from the end of its push at A until B answered its tag.
type lagResult struct {
	lags       []time.Duration
	rate       float64
	aCPU, bCPU time.Duration
	elapsed    time.Duration
	load       float64
}

// lagRun pushes imgs to repl/lag at A, rate images a second, and polls B
// for each tag every 10 ms from the end of its push.
func (b *bench) lagRun(ctx context.Context, imgs []v1.Image, rate float64) (res lagResult, err error) {
	p, a, bc, err := b.session(ctx, viaRule)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, p.remove(context.WithoutCancel(ctx)), a.close(), bc.close()) }()
	const repo = "repl/lag"
	if _, err := bc.client(ctx, repo); err != nil {
		return res, err
	}
	w, err := b.open(p, viaRule, "lag")
	if err != nil {
		return res, err
	}
	res.rate, res.load = rate, w.load
	res.lags = make([]time.Duration, len(imgs))
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i, img := range imgs {
		if i > 0 {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-tick.C:
			}
		}
		d, err := img.Digest()
		if err != nil {
			return res, err
		}
		tag := fmt.Sprintf("t%04d", i)
		if err := a.push(ctx, repo, tag, img); err != nil {
			return res, err
		}
		pushed := time.Now()
		wg.Go(func() {
			seen, err := bc.waitTag(ctx, repo, tag, d.String(), 10*time.Millisecond)
			res.lags[i], errs[i] = seen.Sub(pushed), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	s, err := w.close(time.Now(), viaRule, nil)
	res.aCPU, res.bCPU, res.elapsed = s.aCPU, s.bCPU, s.wall
	return res, err
}
