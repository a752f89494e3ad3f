package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
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
	if o.n < 1 || o.layers < 1 || o.layerMiB < 1 || o.bigLayerMiB < 0 {
		return errors.New("-n, -layers and -layer-mib must be at least 1, -big-layer-mib at least 0")
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
	if bins.portcullis, err = portcullisBinary(ctx, o.portcullis, work, progress); err != nil {
		return err
	}
	if bins.distribution, err = distributionBinary(o.distribution); err != nil {
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
			res, err := runOnce(ctx, w, bins, work, i, progress)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", w, i+1, err)
			}
			results[w] = append(results[w], res)
		}
	}
	writeTable(stdout, ws, results, o.n, shaMBps)
	return nil
}

// step is one measurement of a run, against registries of its own (the
// upstream aside).
type step string

const (
	stepUpstream step = "pull from the upstream"
	stepCache    step = "Portcullis cache: cold, then warm"
	stepProxy    step = "distribution proxy: cold, then warm"
	stepDirect   step = "Portcullis without cache: push, then pull"
)

// order is the steps of run i: rotated every run, so that each step takes
// each place in turn and the machine's drift does not favour one.
func order(i int) []step {
	base := []step{stepUpstream, stepCache, stepProxy, stepDirect}
	k := i % len(base)
	return append(base[k:len(base):len(base)], base[:k]...)
}

// runResult is what one run of a workload measured.
type runResult struct {
	upstream pullResult // straight from the seeded upstream
	// cold and warm are the first and second pulls through a fresh
	// Portcullis cache; cacheUsage is its process's after the cold pull.
	cold, warm pullResult
	cacheUsage usage
	// proxyCold and proxyWarm are the same through distribution's proxy.
	proxyCold, proxyWarm pullResult
	proxyUsage           usage
	// direct is the pull from a Portcullis the image was pushed to.
	direct pullResult
	push   time.Duration
}

// runOnce starts a fresh upstream, seeds it with w's image, and runs every
// step against fresh registries, stopping each whatever happens.
func runOnce(ctx context.Context, w *workload, bins binaries, work string, i int, progress func(string, ...any)) (res runResult, err error) {
	tag := fmt.Sprintf("%s-%d", w.name, i+1)
	up, err := startRegistry(ctx, upstream, bins, work, tag, "")
	defer func() { err = errors.Join(err, up.stop()) }()
	if err != nil {
		return res, err
	}
	upRef, err := w.ref(up.addr, "")
	if err != nil {
		return res, err
	}
	if _, err := w.push(ctx, upRef); err != nil {
		return res, fmt.Errorf("seed the upstream: %w", err)
	}
	label := fmt.Sprintf("%-11s run %d", w, i+1)
	for _, s := range order(i) {
		// Start each step with no dirty pages left by the one before, so
		// that no registry pays for another's writeback.
		syscall.Sync()
		switch s {
		case stepUpstream:
			if res.upstream, err = w.pull(ctx, upRef); err != nil {
				return res, fmt.Errorf("%s: %w", s, err)
			}
			progress("%s  upstream direct  pull %8v  ttfb %6v", label, ms(res.upstream.wall), ms(res.upstream.ttfb))
		case stepCache:
			if err := cacheStep(ctx, w, bins, work, tag, up.addr, &res); err != nil {
				return res, fmt.Errorf("%s: %w", s, err)
			}
			progress("%s  Portcullis cache cold %8v  ttfb %6v (%v from start)  last-byte wait %v  peak RSS %4d MiB (idle %3d)  CPU %v  [%s]",
				label, ms(res.cold.wall), ms(res.cold.ttfb), ms(res.cold.firstByte), ms(res.cold.lastGap), res.cacheUsage.peakRSS>>20,
				res.cacheUsage.idleRSS>>20, res.cacheUsage.cpu, summary(res.cold.served))
			progress("%s  Portcullis cache warm %8v  [%s]", label, ms(res.warm.wall), summary(res.warm.served))
		case stepProxy:
			if err := proxyStep(ctx, w, bins, work, tag, up.addr, &res); err != nil {
				return res, fmt.Errorf("%s: %w", s, err)
			}
			progress("%s  distribution proxy cold %8v  ttfb %6v (%v from start)  last-byte wait %v  peak RSS %4d MiB (idle %3d)  CPU %v  warm %v",
				label, ms(res.proxyCold.wall), ms(res.proxyCold.ttfb), ms(res.proxyCold.firstByte), ms(res.proxyCold.lastGap), res.proxyUsage.peakRSS>>20,
				res.proxyUsage.idleRSS>>20, res.proxyUsage.cpu, ms(res.proxyWarm.wall))
		case stepDirect:
			if err := directStep(ctx, w, bins, work, tag, &res); err != nil {
				return res, fmt.Errorf("%s: %w", s, err)
			}
			progress("%s  Portcullis direct push %8v  pull %8v", label, ms(res.push), ms(res.direct.wall))
		}
	}
	return res, nil
}

// cacheStep pulls w through a fresh Portcullis cache of the upstream at
// upAddr twice: a cold miss, then a warm hit within tagTTL.
func cacheStep(ctx context.Context, w *workload, bins binaries, work, tag, upAddr string, res *runResult) (err error) {
	reg, err := startRegistry(ctx, cached, bins, work, tag, upAddr)
	defer func() { err = errors.Join(err, reg.stop()) }()
	if err != nil {
		return err
	}
	ref, err := w.ref(reg.addr, cachePrefix)
	if err != nil {
		return err
	}
	if res.cold, err = w.pull(ctx, ref); err != nil {
		return fmt.Errorf("cold pull: %w", err)
	}
	if res.cacheUsage, err = reg.usage(); err != nil {
		return err
	}
	if count(res.cold.served, "manifest", "miss") == 0 {
		return fmt.Errorf("cold pull: the manifest was not a cache miss: %s", summary(res.cold.served))
	}
	syscall.Sync()
	if res.warm, err = w.pull(ctx, ref); err != nil {
		return fmt.Errorf("warm pull: %w", err)
	}
	// Every response of the warm pull must come from the cache: the
	// manifest, the config and each layer.
	if hits := count(res.warm.served, "manifest", "hit") + count(res.warm.served, "blob", "hit"); hits != w.layers+2 {
		return fmt.Errorf("warm pull: %d of %d responses were cache hits: %s", hits, w.layers+2, summary(res.warm.served))
	}
	return nil
}

// proxyStep pulls w through a fresh distribution proxy of the upstream at
// upAddr twice: a cold miss, then a warm hit.
func proxyStep(ctx context.Context, w *workload, bins binaries, work, tag, upAddr string, res *runResult) (err error) {
	reg, err := startRegistry(ctx, proxy, bins, work, tag, upAddr)
	defer func() { err = errors.Join(err, reg.stop()) }()
	if err != nil {
		return err
	}
	ref, err := w.ref(reg.addr, "")
	if err != nil {
		return err
	}
	if res.proxyCold, err = w.pull(ctx, ref); err != nil {
		return fmt.Errorf("cold pull: %w", err)
	}
	if res.proxyUsage, err = reg.usage(); err != nil {
		return err
	}
	syscall.Sync()
	if res.proxyWarm, err = w.pull(ctx, ref); err != nil {
		return fmt.Errorf("warm pull: %w", err)
	}
	return nil
}

// directStep pushes w to a fresh Portcullis with no cache and pulls it back.
func directStep(ctx context.Context, w *workload, bins binaries, work, tag string, res *runResult) (err error) {
	reg, err := startRegistry(ctx, direct, bins, work, tag, "")
	defer func() { err = errors.Join(err, reg.stop()) }()
	if err != nil {
		return err
	}
	ref, err := w.ref(reg.addr, "")
	if err != nil {
		return err
	}
	if res.push, err = w.push(ctx, ref); err != nil {
		return err
	}
	syscall.Sync()
	if res.direct, err = w.pull(ctx, ref); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	return nil
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// portcullisBinary returns path, or builds ./cmd/registry into work.
func portcullisBinary(ctx context.Context, path, work string, progress func(string, ...any)) (string, error) {
	if path != "" {
		return path, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the Portcullis module: run from the repository root")
	}
	bin := filepath.Join(work, "portcullis")
	progress("building %s", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/registry")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/registry: %w\n%s", err, out)
	}
	return bin, nil
}

// distributionBinary returns path, or distribution-registry in the tools
// directory of scripts/install-tools.sh ($PORTCULLIS_TOOLS, by default
// ~/.cache/portcullis-tools).
func distributionBinary(path string) (string, error) {
	if path == "" {
		tools := os.Getenv("PORTCULLIS_TOOLS")
		if tools == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			tools = filepath.Join(home, ".cache", "portcullis-tools")
		}
		path = filepath.Join(tools, "bin", "distribution-registry")
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("distribution binary: %w (build it with scripts/install-tools.sh distribution, or pass -distribution)", err)
	}
	return path, nil
}
