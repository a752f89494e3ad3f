package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// method is one way of copying from A to B: a column of the copy tables.
type method string

const (
	viaRule    method = "rule"   // A's push rule
	viaBase    method = "base"   // the push rule of the -baseline binary
	viaCrane   method = "crane"  // crane copy, one image after another
	viaRegctl  method = "regctl" // regctl image copy, one after another
	viaCraneP4 method = "crane4" // crane copy, four at once
)

// rule reports whether m is a push rule (of this binary or the baseline).
func (m method) rule() bool { return m == viaRule || m == viaBase }

// copySample is what one sample of the big or small workload measured.
type copySample struct {
	wall time.Duration
	// aCPU and bCPU are the sites' CPU time over the sample; clientCPU the
	// peers' processes' (zero for the rule).
	aCPU, bCPU, clientCPU time.Duration
	// copierPeak is the peak RSS of what copies: A for the rule, the
	// largest client process for the peers.
	copierPeak int64
	// tagging is, for the rule on the small workload, how long the 200 tag
	// PUTs at A took (part of wall).
	tagging time.Duration
	load    float64
}

// prepareRegctl writes regctl's configuration: plain HTTP to both sites,
// and the account at B.
func (b *bench) prepareRegctl() error {
	if b.regctlPrepared {
		return nil
	}
	dir := filepath.Join(b.work, "home", ".regctl")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg := map[string]any{"hosts": map[string]any{
		b.aAddr: map[string]string{"tls": "disabled", "hostname": b.aAddr},
		b.bAddr: map[string]string{"tls": "disabled", "hostname": b.bAddr, "user": account, "pass": b.password},
	}}
	body, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	b.regctlPrepared = true
	return os.WriteFile(filepath.Join(dir, "config.json"), body, 0o600)
}

// toolRun is what the peers' processes of one sample used.
type toolRun struct {
	mu   sync.Mutex
	cpu  time.Duration
	peak int64
}

// copyWith runs the peer m once to copy src (at A) to dst (at B).
func (b *bench) copyWith(ctx context.Context, m method, src, dst string, tr *toolRun) error {
	var cmd *exec.Cmd
	switch m {
	case viaCrane, viaCraneP4:
		cmd = exec.CommandContext(ctx, b.crane, "copy", "--insecure", b.aAddr+"/"+src, b.bAddr+"/"+dst)
	case viaRegctl:
		cmd = exec.CommandContext(ctx, b.regctl, "image", "copy", b.aAddr+"/"+src, b.bAddr+"/"+dst)
	default:
		return fmt.Errorf("no client for %s", m)
	}
	cmd.Env = b.toolEnv
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	peak := watchPeak(cmd.Process.Pid, filepath.Base(cmd.Path))
	err := cmd.Wait()
	hwm := peak()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", cmd, err, out.Bytes())
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	st := cmd.ProcessState
	tr.cpu += st.UserTime() + st.SystemTime()
	tr.peak = max(tr.peak, hwm)
	return nil
}

// watchPeak reads the VmHWM of process pid every 5 ms, once it runs the
// program name, until the returned function is called, which returns the
// last value read. The child's rusage cannot serve: its ru_maxrss starts
// from this program's RSS at the fork.
func watchPeak(pid int, name string) func() int64 {
	done := make(chan struct{})
	var last atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil &&
				strings.HasPrefix(string(b), "Name:\t"+name[:min(len(name), 15)]+"\n") {
				if v, err := benchproc.ProcStatus(pid, "VmHWM"); err == nil {
					last.Store(max(last.Load(), v))
				}
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() int64 {
		close(done)
		wg.Wait()
		return last.Load()
	}
}

// window measures the sites from the start of a timed part of a sample.
type window struct {
	p          *pair
	start      time.Time
	aCPU, bCPU time.Duration
	load       float64
	perf       []*exec.Cmd
}

// open starts a window, and, with -perf, a perf recording of A and B for
// the rule's samples.
func (b *bench) open(p *pair, m method, name string) (*window, error) {
	w := &window{p: p, load: loadavg()}
	var err error
	if w.aCPU, err = p.a.cpu(); err != nil {
		return nil, err
	}
	if w.bCPU, err = p.b.cpu(); err != nil {
		return nil, err
	}
	if err := p.a.resetPeak(); err != nil {
		return nil, err
	}
	if b.perfDir != "" && m.rule() {
		for _, s := range []*site{p.a, p.b} {
			cmd := exec.Command("perf", "record", "-F", "499", "-g", "-p", fmt.Sprint(s.pid()),
				"-o", filepath.Join(b.perfDir, name+"-"+s.name+".perf.data"))
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("perf record: %w", err)
			}
			w.perf = append(w.perf, cmd)
		}
	}
	w.start = time.Now()
	return w, nil
}

// close ends the window at end and fills s with what the sites used.
func (w *window) close(end time.Time, m method, tr *toolRun) (copySample, error) {
	s := copySample{wall: end.Sub(w.start), load: w.load}
	for _, cmd := range w.perf {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	a, err := w.p.a.cpu()
	if err != nil {
		return s, err
	}
	bc, err := w.p.b.cpu()
	if err != nil {
		return s, err
	}
	s.aCPU, s.bCPU = a-w.aCPU, bc-w.bCPU
	if m.rule() {
		if s.copierPeak, err = w.p.a.peak(); err != nil {
			return s, err
		}
	} else {
		s.clientCPU, s.copierPeak = tr.cpu, tr.peak
	}
	return s, nil
}

// bigSample copies img once with m between a fresh pair of sites.
func (b *bench) bigSample(ctx context.Context, m method, img v1.Image, run int) (s copySample, err error) {
	p, a, bc, err := b.session(ctx, m)
	if err != nil {
		return s, err
	}
	defer func() { err = errors.Join(err, p.remove(context.WithoutCancel(ctx)), a.close(), bc.close()) }()
	d, err := img.Digest()
	if err != nil {
		return s, err
	}
	src, dst := "src/big", string(m)+"/big"
	if m.rule() {
		src, dst = "repl/big", "repl/big"
	}
	// The token for polling B is fetched before the clock starts.
	if _, err := bc.head(ctx, dst, "v1"); err != nil {
		return s, err
	}
	if err := a.push(ctx, src, "v1", img); err != nil {
		return s, err
	}
	w, err := b.open(p, m, fmt.Sprintf("big-%d", run))
	if err != nil {
		return s, err
	}
	tr := &toolRun{}
	var end time.Time
	if m.rule() {
		end, err = bc.waitTag(ctx, dst, "v1", d.String(), 20*time.Millisecond)
	} else {
		err = b.copyWith(ctx, m, src+":v1", dst+":v1", tr)
		end = time.Now()
	}
	if err != nil {
		return s, err
	}
	if s, err = w.close(end, m, tr); err != nil {
		return s, err
	}
	if got, err := bc.head(ctx, dst, "v1"); err != nil || got != d.String() {
		return s, errors.Join(fmt.Errorf("%s:v1 at B is %q, pushed %s", dst, got, d), err)
	}
	return s, nil
}

// smallRef is where the i-th small image goes: 20 repositories of 10 tags.
func smallRef(i int) (repo, tag string) {
	return fmt.Sprintf("app-%02d", i/10), fmt.Sprintf("v%d", i%10)
}

// smallSample copies imgs once with m between a fresh pair of sites.
func (b *bench) smallSample(ctx context.Context, m method, imgs []v1.Image, run int) (s copySample, err error) {
	p, a, bc, err := b.session(ctx, m)
	if err != nil {
		return s, err
	}
	defer func() { err = errors.Join(err, p.remove(context.WithoutCancel(ctx)), a.close(), bc.close()) }()
	srcNS, dstNS := "src/", string(m)+"/"
	if m.rule() {
		srcNS, dstNS = "repl/", "repl/"
	}
	// Not timed: the rule's images are pushed by digest (no event yet), the
	// peers' by tag; and B's tokens for polling are fetched.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, img := range imgs {
		g.Go(func() error {
			repo, tag := smallRef(i)
			if m.rule() {
				d, err := img.Digest()
				if err != nil {
					return err
				}
				tag = d.String()
			}
			return a.push(gctx, srcNS+repo, tag, img)
		})
	}
	if err := g.Wait(); err != nil {
		return s, err
	}
	for i := 0; i < len(imgs); i += 10 {
		repo, _ := smallRef(i)
		if _, err := bc.client(ctx, dstNS+repo); err != nil {
			return s, err
		}
	}

	w, err := b.open(p, m, fmt.Sprintf("small-%d", run))
	if err != nil {
		return s, err
	}
	tr := &toolRun{}
	var end time.Time
	var tagging time.Duration
	switch m {
	case viaRule, viaBase:
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for i, img := range imgs {
			g.Go(func() error {
				repo, tag := smallRef(i)
				return a.tag(gctx, srcNS+repo, tag, img)
			})
		}
		if err := g.Wait(); err != nil {
			return s, err
		}
		tagging = time.Since(w.start)
		end, err = b.waitAllTags(ctx, bc, dstNS, len(imgs))
	default:
		jobs := 1
		if m == viaCraneP4 {
			jobs = 4
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(jobs)
		for i := range imgs {
			g.Go(func() error {
				repo, tag := smallRef(i)
				return b.copyWith(gctx, m, srcNS+repo+":"+tag, dstNS+repo+":"+tag, tr)
			})
		}
		err = g.Wait()
		end = time.Now()
	}
	if err != nil {
		return s, err
	}
	if s, err = w.close(end, m, tr); err != nil {
		return s, err
	}
	s.tagging = tagging
	for i, img := range imgs {
		repo, tag := smallRef(i)
		d, err := img.Digest()
		if err != nil {
			return s, err
		}
		if got, err := bc.head(ctx, dstNS+repo, tag); err != nil || got != d.String() {
			return s, errors.Join(fmt.Errorf("%s%s:%s at B is %q, pushed %s", dstNS, repo, tag, got, d), err)
		}
	}
	return s, nil
}

// waitAllTags polls B's tag lists every 100 ms until every repository of
// ns holds its ten tags, and returns when it first did.
func (b *bench) waitAllTags(ctx context.Context, bc *siteB, ns string, n int) (time.Time, error) {
	left := map[string]bool{}
	for i := 0; i < n; i += 10 {
		repo, _ := smallRef(i)
		left[ns+repo] = true
	}
	for {
		for repo := range left {
			tags, err := bc.tags(ctx, repo)
			if err != nil {
				return time.Time{}, err
			}
			if len(tags) >= 10 {
				delete(left, repo)
			}
		}
		if len(left) == 0 {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for the tags at B: %d repositories incomplete: %w", len(left), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
