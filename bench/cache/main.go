package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
	"github.com/portcullis/portcullis/bench/internal/benchstat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cache bench:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	n            int
	portcullis   string
	distribution string
	layers       int
	layerMiB     int
	bigLayerMiB  int
	pulls        int
	timeout      time.Duration
	keep         bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("cache", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 3, "runs of each workload; the table shows medians")
	fs.StringVar(&o.portcullis, "portcullis", "", "Portcullis binary (default: go build ./cmd/registry)")
	fs.StringVar(&o.distribution, "distribution", "", "distribution v3 registry binary, the upstream and the proxy (default: ~/.cache/portcullis-tools/bin/distribution-registry)")
	fs.IntVar(&o.layers, "layers", 4, "layers of the first image")
	fs.IntVar(&o.layerMiB, "layer-mib", 64, "size of each layer of the first image, MiB")
	fs.IntVar(&o.bigLayerMiB, "big-layer-mib", 512, "size of the one layer of the second image, MiB; 0 leaves the second image out")
	fs.IntVar(&o.pulls, "pulls", 3, "warm pulls from each registry in each run, taking turns; the run keeps their median")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (registry logs and configs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.n < 1 || o.pulls < 1 || o.layers < 1 || o.layerMiB < 1 || o.bigLayerMiB < 0 {
		return errors.New("-n, -pulls, -layers and -layer-mib must be at least 1, -big-layer-mib at least 0")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	work, err := os.MkdirTemp("", "cachebench-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
			fmt.Fprintln(stderr, "work directory kept:", work)
			return
		}
		err = errors.Join(err, os.RemoveAll(work))
	}()
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }

	var bins binaries
	if bins.portcullis, err = benchproc.Portcullis(ctx, o.portcullis, work, progress); err != nil {
		return err
	}
	if bins.distribution, err = benchproc.Tool(o.distribution, "distribution-registry"); err != nil {
		return err
	}

	progress("generating random layers")
	ws := make([]*workload, 0, 2)
	w, err := newWorkload("layers", o.layers, int64(o.layerMiB)<<20)
	if err != nil {
		return err
	}
	ws = append(ws, w)
	if o.bigLayerMiB > 0 {
		w, err := newWorkload("biglayer", 1, int64(o.bigLayerMiB)<<20)
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}

	shaMBps := sha256Throughput(ws[0], 3)
	progress("sha256: %.0f MB/s", shaMBps)

	results := map[*workload][]runResult{}
	for i := range o.n {
		for _, w := range ws {
			res, err := runOnce(ctx, w, bins, work, i, o.pulls, progress)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", w, i+1, err)
			}
			results[w] = append(results[w], res)
		}
	}
	writeTable(stdout, ws, results, o.n, shaMBps)
	return nil
}

// step is one measurement of the cold phase of a run.
type step string

const (
	stepUpstream step = "pull from the upstream"
	stepCache    step = "cold miss through the Portcullis cache"
	stepProxy    step = "cold miss through distribution's proxy"
	stepDirect   step = "push to Portcullis without a cache"
)

// rotate returns s rotated left by k: run after run, each element takes
// each place in turn, so that the machine's drift does not favour one.
func rotate[T any](s []T, k int) []T {
	k %= len(s)
	return append(s[k:len(s):len(s)], s[:k]...)
}

// runResult is what one run of a workload measured.
type runResult struct {
	upstream pullResult // straight from the seeded upstream
	// cold is the first pull through a fresh Portcullis cache; cacheUsage
	// is its process's right after it.
	cold       pullResult
	cacheUsage usage
	// proxyCold and proxyUsage are the same through distribution's proxy.
	proxyCold  pullResult
	proxyUsage usage
	push       time.Duration // of the image to the Portcullis without a cache
	// warm, direct and proxyWarm are the median wall times of the pulls of
	// the warm phase: through the Portcullis cache (every response a
	// hit), from the Portcullis the image was pushed to, and through
	// distribution's proxy.
	warm, direct, proxyWarm time.Duration
	// warmCPU and directCPU are the median CPU times the two Portcullis
	// processes spent on one of those pulls.
	warmCPU, directCPU time.Duration
}

// running are the registries of one run.
type running struct {
	up, cache, proxy, direct *registry
}

func (r *running) stop() error {
	return errors.Join(r.up.stop(), r.cache.stop(), r.proxy.stop(), r.direct.stop())
}

// runOnce starts a fresh upstream and seeds it with w's image. In the cold
// phase it pulls the image straight from the upstream, through a fresh
// Portcullis cache and through a fresh distribution proxy, and pushes it
// to a fresh Portcullis without a cache, in an order that rotates from run
// to run. In the warm phase it pulls it pulls times from each of the last
// three, taking turns. Every registry is stopped whatever happens.
func runOnce(ctx context.Context, w *workload, bins binaries, work string, i, pulls int, progress func(string, ...any)) (res runResult, err error) {
	tag := fmt.Sprintf("%s-%d", w.name, i+1)
	var regs running
	defer func() { err = errors.Join(err, regs.stop()) }()
	if regs.up, err = startRegistry(ctx, upstream, bins, work, tag, ""); err != nil {
		return res, err
	}
	upRef, err := w.ref(regs.up.addr, "")
	if err != nil {
		return res, err
	}
	if _, err := w.push(ctx, upRef); err != nil {
		return res, fmt.Errorf("seed the upstream: %w", err)
	}
	label := fmt.Sprintf("%-11s run %d", w, i+1)
	for _, s := range rotate([]step{stepUpstream, stepCache, stepProxy, stepDirect}, i) {
		// Start each step with no dirty pages left by the one before, so
		// that no registry pays for another's writeback.
		syscall.Sync()
		if err := coldStep(ctx, s, w, bins, work, tag, &regs, &res); err != nil {
			return res, fmt.Errorf("%s: %w", s, err)
		}
		switch s {
		case stepUpstream:
			progress("%s  upstream direct pull %8v  ttfb %6v", label, ms(res.upstream.wall), ms(res.upstream.ttfb))
		case stepCache:
			progress("%s  Portcullis cache cold %8v  ttfb %6v (%v from start)  last-byte wait %v  peak RSS %4d MiB (idle %3d)  CPU %v  [%s]",
				label, ms(res.cold.wall), ms(res.cold.ttfb), ms(res.cold.firstByte), ms(res.cold.lastGap), res.cacheUsage.peakRSS>>20,
				res.cacheUsage.idleRSS>>20, res.cacheUsage.cpu, summary(res.cold.served))
		case stepProxy:
			progress("%s  distribution proxy cold %8v  ttfb %6v (%v from start)  last-byte wait %v  peak RSS %4d MiB (idle %3d)  CPU %v",
				label, ms(res.proxyCold.wall), ms(res.proxyCold.ttfb), ms(res.proxyCold.firstByte), ms(res.proxyCold.lastGap), res.proxyUsage.peakRSS>>20,
				res.proxyUsage.idleRSS>>20, res.proxyUsage.cpu)
		case stepDirect:
			progress("%s  Portcullis direct push %8v", label, ms(res.push))
		}
	}
	if err := warmPhase(ctx, w, &regs, i, pulls, &res); err != nil {
		return res, err
	}
	progress("%s  warm phase, median of %d pulls: Portcullis cache %v (CPU %v), Portcullis direct %v (CPU %v), distribution proxy %v",
		label, pulls, ms(res.warm), ms(res.warmCPU), ms(res.direct), ms(res.directCPU), ms(res.proxyWarm))
	return res, nil
}

// coldStep runs step s, starting the registry it needs into regs.
func coldStep(ctx context.Context, s step, w *workload, bins binaries, work, tag string, regs *running, res *runResult) (err error) {
	switch s {
	case stepUpstream:
		ref, err := w.ref(regs.up.addr, "")
		if err != nil {
			return err
		}
		res.upstream, err = w.pull(ctx, ref)
		return err
	case stepCache:
		if regs.cache, err = startRegistry(ctx, cached, bins, work, tag, regs.up.addr); err != nil {
			return err
		}
		ref, err := w.ref(regs.cache.addr, cachePrefix)
		if err != nil {
			return err
		}
		if res.cold, err = w.pull(ctx, ref); err != nil {
			return err
		}
		if res.cacheUsage, err = regs.cache.usage(); err != nil {
			return err
		}
		if count(res.cold.served, "manifest", "miss") == 0 {
			return fmt.Errorf("the manifest was not a cache miss: %s", summary(res.cold.served))
		}
		return nil
	case stepProxy:
		if regs.proxy, err = startRegistry(ctx, proxy, bins, work, tag, regs.up.addr); err != nil {
			return err
		}
		ref, err := w.ref(regs.proxy.addr, "")
		if err != nil {
			return err
		}
		if res.proxyCold, err = w.pull(ctx, ref); err != nil {
			return err
		}
		res.proxyUsage, err = regs.proxy.usage()
		return err
	case stepDirect:
		if regs.direct, err = startRegistry(ctx, direct, bins, work, tag, ""); err != nil {
			return err
		}
		ref, err := w.ref(regs.direct.addr, "")
		if err != nil {
			return err
		}
		res.push, err = w.push(ctx, ref)
		return err
	}
	return fmt.Errorf("unknown step %q", s)
}

// warmPhase pulls w pulls times from each of the Portcullis cache (now
// warm), the Portcullis it was pushed to and distribution's proxy, taking
// turns in an order that rotates, and keeps the medians.
func warmPhase(ctx context.Context, w *workload, regs *running, i, pulls int, res *runResult) error {
	type target struct {
		reg    *registry
		prefix string
		walls  []float64
		cpus   []float64
	}
	cache := &target{reg: regs.cache, prefix: cachePrefix}
	dir := &target{reg: regs.direct}
	prx := &target{reg: regs.proxy}
	for j := range pulls {
		for _, t := range rotate([]*target{cache, dir, prx}, i+j) {
			syscall.Sync()
			ref, err := w.ref(t.reg.addr, t.prefix)
			if err != nil {
				return err
			}
			before, err := benchproc.CPUTime(t.reg.cmd.Process.Pid)
			if err != nil {
				return err
			}
			p, err := w.pull(ctx, ref)
			if err != nil {
				return fmt.Errorf("warm pull %d from the %s registry: %w", j+1, t.reg.role, err)
			}
			after, err := benchproc.CPUTime(t.reg.cmd.Process.Pid)
			if err != nil {
				return err
			}
			// Every response through the warm cache must be a hit: the
			// manifest, the config and each layer.
			if t == cache {
				if hits := count(p.served, "manifest", "hit") + count(p.served, "blob", "hit"); hits != w.layers+2 {
					return fmt.Errorf("warm pull %d: %d of %d responses were cache hits: %s", j+1, hits, w.layers+2, summary(p.served))
				}
			}
			t.walls = append(t.walls, p.wall.Seconds())
			t.cpus = append(t.cpus, (after - before).Seconds())
		}
	}
	sec := func(v []float64) time.Duration { return time.Duration(benchstat.Median(v) * float64(time.Second)) }
	res.warm, res.warmCPU = sec(cache.walls), sec(cache.cpus)
	res.direct, res.directCPU = sec(dir.walls), sec(dir.cpus)
	res.proxyWarm = sec(prx.walls)
	return nil
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
