package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// loop is a run of requests: each one's latency, the time from the first to
// the last, and the CPU time the registry spent on all of them.
type loop struct {
	latencies []time.Duration
	elapsed   time.Duration
	cpu       time.Duration
}

func (l loop) perSec() float64 {
	if len(l.latencies) == 0 {
		return 0
	}
	return float64(len(l.latencies)) / l.elapsed.Seconds()
}

func (l loop) cpuPer() time.Duration {
	if len(l.latencies) == 0 {
		return 0
	}
	return l.cpu / time.Duration(len(l.latencies))
}

// quantile returns the q-quantile (nearest rank) of the latencies.
func (l loop) quantile(q float64) time.Duration {
	if len(l.latencies) == 0 {
		return 0
	}
	s := slices.Clone(l.latencies)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// timeLoop sends n requests made by newReq on client, conns at a time, each
// of which must answer 200, and returns their latencies, the total time and
// the CPU time of the registry process pid over the loop. It stops at the
// first failure.
func timeLoop(client *http.Client, pid, n, conns int, newReq func() (*http.Request, error)) (loop, error) {
	cpu0, err := benchproc.CPUTime(pid)
	if err != nil {
		return loop{}, err
	}
	per := make([][]time.Duration, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range conns {
		count := n / conns
		if c < n%conns {
			count++
		}
		wg.Go(func() {
			per[c] = make([]time.Duration, 0, count)
			for range count {
				d, err := timeRequest(client, newReq)
				if err != nil {
					errs[c] = err
					return
				}
				per[c] = append(per[c], d)
			}
		})
	}
	wg.Wait()
	l := loop{elapsed: time.Since(start), latencies: slices.Concat(per...)}
	if err := errors.Join(errs...); err != nil {
		return loop{}, err
	}
	cpu1, err := benchproc.CPUTime(pid)
	if err != nil {
		return loop{}, err
	}
	l.cpu = cpu1 - cpu0
	return l, nil
}

// timeRequest sends one request made by newReq, reads the body and returns
// the time until its end; an answer other than 200 is an error.
func timeRequest(client *http.Client, newReq func() (*http.Request, error)) (time.Duration, error) {
	req, err := newReq()
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(begin)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	return d, nil
}

// manifestAccept is what docker and crane accept on a manifest request.
var manifestAccept = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

// manifestLoad reads ref's manifest by tag from reg n times with GET, then n
// times with HEAD, on conns connections of tr at once, after 100 of each to
// warm up the connections.
func manifestLoad(ctx context.Context, reg *registry, tr http.RoundTripper, ref name.Reference, n, conns int) (get, head loop, err error) {
	client := &http.Client{Transport: tr}
	url := "http://" + reg.addr + "/v2/" + ref.Context().RepositoryStr() + "/manifests/" + ref.Identifier()
	newReq := func(method string) func() (*http.Request, error) {
		return func() (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, method, url, nil)
			if err != nil {
				return nil, err
			}
			for _, a := range manifestAccept {
				req.Header.Add("Accept", a)
			}
			return req, nil
		}
	}
	pid := reg.cmd.Process.Pid
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if _, err := timeLoop(client, pid, 100, conns, newReq(m)); err != nil {
			return loop{}, loop{}, fmt.Errorf("%s manifest: %w", m, err)
		}
	}
	if get, err = timeLoop(client, pid, n, conns, newReq(http.MethodGet)); err != nil {
		return loop{}, loop{}, fmt.Errorf("GET manifest: %w", err)
	}
	if head, err = timeLoop(client, pid, n, conns, newReq(http.MethodHead)); err != nil {
		return loop{}, loop{}, fmt.Errorf("HEAD manifest: %w", err)
	}
	return get, head, nil
}
