package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// latency is the manifest PUT latency against a serving Portcullis, with
// and without a collection running.
type latency struct {
	without, with []time.Duration
	// gcRuns is how many collections ran (to their end) during the puts
	// with a collection; gcErrors how many failed.
	gcRuns, gcErrors int
	gcFirstErr       error
	// failed counts PUTs that did not answer 201; lost counts manifests
	// and blobs of the PUTs that were gone afterwards.
	failed   int
	firstErr error
	lost     int
	checked  int
}

// server is a serving Portcullis process.
type server struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startServer starts `registry serve` of bin on st, with no background
// collector, and waits until GET /v2/ answers.
func startServer(ctx context.Context, bin string, st store, work string) (*server, error) {
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done: make(chan struct{})}
	dataDir := filepath.Join(work, "serve-data")
	cfg := filepath.Join(work, "serve.yml")
	if err := os.WriteFile(cfg, []byte(oursConfig(st, dataDir)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(work, "serve.log"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "serve", "--config", cfg, "--addr", s.addr, "--data", dataDir)
	s.cmd.Env = append(os.Environ(), st.env()...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start registry serve: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if code, err := request(ctx, http.MethodGet, "http://"+s.addr+"/v2/", nil); err == nil && code == http.StatusOK {
			return s, nil
		}
		select {
		case <-s.done:
			return s, fmt.Errorf("registry serve exited: %v (log: %s)", s.err, logf.Name())
		case <-ctx.Done():
			return s, fmt.Errorf("registry serve not ready (log: %s): %w", logf.Name(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends the server: SIGTERM, then SIGKILL after 10 s.
func (s *server) stop() error {
	if s == nil {
		return nil
	}
	select {
	case <-s.done:
		return fmt.Errorf("registry serve exited early: %v", s.err)
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	return nil
}

var client = &http.Client{
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
	Timeout:   time.Minute,
}

// request sends one request and returns its status code.
func request(ctx context.Context, method, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	}
	// Without it a manifest HEAD answers 404: the registry serves an OCI
	// manifest only to a client that accepts one.
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// put is one manifest PUT of the latency measurement: a new manifest, by
// tag, that refers to the config and layers of a live manifest of d.
type put struct {
	repo, tag string
	content   []byte
	blobs     []digest.Digest
}

func (d *dataset) put(phase string, i int) (put, error) {
	m := d.manifests[d.tagged[i%len(d.tagged)]]
	content, err := d.imageManifest(m.config, m.layers, map[string]string{"bench.gc.put": fmt.Sprintf("%s-%d", phase, i)})
	if err != nil {
		return put{}, err
	}
	p := put{repo: m.repo, tag: fmt.Sprintf("p-%s-%d", phase, i), content: content}
	for _, b := range append([]int{m.config}, m.layers...) {
		p.blobs = append(p.blobs, digest.FromBytes(d.blobs[b]))
	}
	return p, nil
}

// putPhase PUTs manifests from workers goroutines: at least n, and then
// on until more() is false, counting the PUTs begun in next. It returns
// each PUT's latency and the PUTs that were answered 201; l counts the
// others.
func putPhase(ctx context.Context, addr string, d *dataset, phase string, n, workers int, more func() bool, l *latency, next *atomic.Int64) ([]time.Duration, []put, error) {
	var (
		mu    sync.Mutex
		lat   []time.Duration
		puts  []put
		wg    sync.WaitGroup
		first error
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n && !more() {
					return
				}
				p, err := d.put(phase, i)
				if err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					return
				}
				start := time.Now()
				code, err := request(ctx, http.MethodPut, "http://"+addr+"/v2/"+p.repo+"/manifests/"+p.tag, p.content)
				took := time.Since(start)
				mu.Lock()
				lat = append(lat, took)
				if err == nil && code != http.StatusCreated {
					err = fmt.Errorf("PUT %s:%s: %d", p.repo, p.tag, code)
				}
				if err == nil {
					puts = append(puts, p)
				} else {
					l.failed++
					l.firstErr = cmpErr(l.firstErr, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, puts, errors.Join(first, ctx.Err())
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// measureLatency seeds d into a new bucket, starts a Portcullis on it,
// PUTs n manifests with no collection, then PUTs again while `registry gc`
// runs in a loop, until n PUTs are done and at least one collection
// finished. The first collection of the loop has the dataset's garbage to
// sweep. Afterwards it checks that every PUT manifest and the blobs it
// refers to are still there.
func measureLatency(ctx context.Context, bin string, st store, d *dataset, work string, n, workers int, progress func(string, ...any)) (l latency, err error) {
	if err := os.MkdirAll(work, 0o750); err != nil {
		return l, err
	}
	srv, err := startServer(ctx, bin, st, work)
	defer func() { err = errors.Join(err, srv.stop()) }()
	if err != nil {
		return l, err
	}
	progress("latency: %d PUTs without a collection", n)
	var puts []put
	l.without, puts, err = putPhase(ctx, srv.addr, d, "idle", n, workers, func() bool { return false }, &l, new(atomic.Int64))
	if err != nil {
		return l, err
	}

	progress("latency: PUTs while registry gc runs in a loop")
	var (
		runs   atomic.Int64
		stopGC atomic.Bool
		loop   sync.WaitGroup
	)
	var issued atomic.Int64 // PUTs begun in the phase with collections
	loop.Go(func() {
		// One more collection while the PUTs go on: the phase ends once n
		// PUTs were made and a collection finished.
		for k := 0; !stopGC.Load() && ctx.Err() == nil && (runs.Load() < 1 || issued.Load() < int64(n)); k++ {
			c, r, err := runOurs(ctx, bin, st, work, fmt.Sprintf("gc-loop-%d", k))
			if err != nil {
				l.gcErrors++
				l.gcFirstErr = cmpErr(l.gcFirstErr, err)
				// Without a collection the phase has nothing to measure.
				if l.gcErrors >= 3 {
					runs.Store(1 << 30)
					return
				}
				continue
			}
			progress("latency: collection %d: %v, %d manifests and %d blobs deleted, %d spared", k+1, c.wall.Round(time.Millisecond), r.Manifests.Deleted, r.Blobs.Deleted, r.Blobs.Spared)
			runs.Add(1)
		}
	})
	var more []put
	l.with, more, err = putPhase(ctx, srv.addr, d, "gc", n, workers, func() bool { return runs.Load() < 1 }, &l, &issued)
	stopGC.Store(true)
	loop.Wait()
	l.gcRuns = int(min(runs.Load(), 1<<20))
	if err != nil {
		return l, err
	}
	if l.gcErrors >= 3 {
		return l, fmt.Errorf("registry gc failed %d times: %w", l.gcErrors, l.gcFirstErr)
	}
	puts = append(puts, more...)

	// Nothing runs now: every PUT that was answered 201 must have left its
	// manifest and blobs.
	var urls []string
	checked := map[string]bool{}
	for _, p := range puts {
		urls = append(urls, "http://"+srv.addr+"/v2/"+p.repo+"/manifests/"+p.tag)
		for _, b := range p.blobs {
			u := "http://" + srv.addr + "/v2/" + p.repo + "/blobs/" + string(b)
			if !checked[u] {
				checked[u] = true
				urls = append(urls, u)
			}
		}
	}
	var (
		next, lost atomic.Int64
		check      sync.WaitGroup
		errs       = make([]error, workers)
	)
	for w := range workers {
		check.Go(func() {
			for i := int(next.Add(1) - 1); i < len(urls) && errs[w] == nil; i = int(next.Add(1) - 1) {
				code, err := request(ctx, http.MethodHead, urls[i], nil)
				if err != nil {
					errs[w] = err
				} else if code != http.StatusOK {
					lost.Add(1)
					progress("latency: after the collections, HEAD %s: %d", urls[i], code)
				}
			}
		})
	}
	check.Wait()
	l.checked, l.lost = len(urls), int(lost.Load())
	if err := errors.Join(errs...); err != nil {
		return l, err
	}
	return l, nil
}

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
