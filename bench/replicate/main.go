package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/portcullis/portcullis/bench/internal/benchimage"
	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "replicate:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	n             int
	workloads     string
	portcullis    string
	crane, regctl string
	minio         string
	storage       string
	concurrency   int
	small         int
	lagImages     int
	lagRate       float64
	events        int
	settle        time.Duration
	perf          string
	timeout       time.Duration
	keep          bool
	peers         bool
	baseline      string
}

// workloadNames are the workloads in the order they run.
var workloadNames = []string{"big", "small", "lag", "pending"}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("replicate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 3, "samples of big and small with each way of copying; the tables show the median")
	fs.StringVar(&o.workloads, "workload", "all", "comma-separated: big, small, lag, pending, or all")
	fs.StringVar(&o.portcullis, "portcullis", "", "Portcullis binary (default: go build ./cmd/registry)")
	fs.StringVar(&o.crane, "crane", "", "crane binary (default: crane in the tools bin of scripts/install-tools.sh)")
	fs.StringVar(&o.regctl, "regctl", "", "regctl binary (default: regctl in the tools bin of scripts/install-tools.sh)")
	fs.StringVar(&o.minio, "minio", "", "minio binary for -storage s3 (default: minio in the tools bin)")
	fs.StringVar(&o.storage, "storage", "filesystem", "filesystem: each site on a directory; s3: each site on a bucket of one MinIO server")
	fs.IntVar(&o.concurrency, "concurrency", 0, "replication.concurrency of site A (0: Portcullis's default)")
	fs.IntVar(&o.small, "small", 200, "images of the small workload (a multiple of 10)")
	fs.IntVar(&o.lagImages, "lag-images", 60, "images pushed in the lag workload")
	fs.Float64Var(&o.lagRate, "lag-rate", 2, "images pushed a second in the lag workload")
	fs.IntVar(&o.events, "events", 10000, "tags PUT at A while B is down in the pending workload")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "how long A stays with the events pending before B is started")
	fs.StringVar(&o.perf, "perf", "", "a directory: record sites A and B with perf record -g during the rule's samples (big, small, lag)")
	fs.DurationVar(&o.timeout, "timeout", time.Hour, "give up after this long")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (site configs and logs)")
	fs.StringVar(&o.baseline, "baseline", "", "another Portcullis binary: its push rule (both sites run it) as one more column of big and small")
	fs.BoolVar(&o.peers, "peers", true, "also copy with crane and regctl (false: the push rule alone, to profile it)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.n < 1 || o.small < 10 || o.small%10 != 0 || o.lagImages < 1 || o.lagRate <= 0 || o.events < 1 {
		return errors.New("-n and -lag-images must be at least 1, -small a multiple of 10, -lag-rate positive, -events at least 1")
	}
	if o.storage != "filesystem" && o.storage != "s3" {
		return fmt.Errorf("-storage %q: want filesystem or s3", o.storage)
	}
	want := map[string]bool{}
	for w := range strings.SplitSeq(o.workloads, ",") {
		switch {
		case w == "all":
			for _, n := range workloadNames {
				want[n] = true
			}
		case slices.Contains(workloadNames, w):
			want[w] = true
		default:
			return fmt.Errorf("-workload %q: want big, small, lag, pending or all", w)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	progress := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, a...)...)
	}

	work, err := os.MkdirTemp("", "replbench-")
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
	b := &bench{work: work, storage: o.storage, concurrency: o.concurrency, perfDir: o.perf, progress: progress, baseline: o.baseline}
	if b.bin, err = benchproc.Portcullis(ctx, o.portcullis, work, progress); err != nil {
		return err
	}
	if b.crane, err = benchproc.Tool(o.crane, "crane"); err != nil {
		return err
	}
	if b.regctl, err = benchproc.Tool(o.regctl, "regctl"); err != nil {
		return err
	}
	if o.perf != "" {
		if err := os.MkdirAll(o.perf, 0o750); err != nil {
			return err
		}
	}
	if o.storage == "s3" {
		bin, err := benchproc.Tool(o.minio, "minio")
		if err != nil {
			return err
		}
		b.minio, err = benchproc.StartMinIO(ctx, bin, work)
		defer func() { err = errors.Join(err, b.minio.Stop()) }()
		if err != nil {
			return err
		}
		progress("minio at %s", b.minio.Endpoint)
	}
	if err := newBench(ctx, b); err != nil {
		return err
	}
	if err := b.prepareRegctl(); err != nil {
		return err
	}

	rep := &report{o: o}
	if want["big"] {
		progress("generating the 256 MiB image")
		img, err := benchimage.New(benchimage.RandomLayer(64<<20), benchimage.RandomLayer(64<<20), benchimage.RandomLayer(64<<20), benchimage.RandomLayer(64<<20))
		if err != nil {
			return err
		}
		rep.big, err = copySamples(o.n, "big", o.methods(viaRule, viaCrane, viaRegctl), progress,
			func(m method, i int) (copySample, error) { return b.bigSample(ctx, m, img, i) })
		if err != nil {
			return err
		}
	}
	if want["small"] {
		imgs := make([]v1.Image, o.small)
		for i := range imgs {
			if imgs[i], err = smallImage(); err != nil {
				return err
			}
		}
		rep.small, err = copySamples(o.n, "small", o.methods(viaRule, viaCrane, viaRegctl, viaCraneP4), progress,
			func(m method, i int) (copySample, error) { return b.smallSample(ctx, m, imgs, i) })
		if err != nil {
			return err
		}
	}
	if want["lag"] {
		imgs := make([]v1.Image, o.lagImages)
		for i := range imgs {
			if imgs[i], err = smallImage(); err != nil {
				return err
			}
		}
		res, err := b.lagRun(ctx, imgs, o.lagRate)
		if err != nil {
			return fmt.Errorf("lag: %w", err)
		}
		progress("lag    %d images at %.1f/s: p50 %v  p95 %v  max %v  load %.1f", len(res.lags), res.rate,
			quantile(res.lags, 0.5), quantile(res.lags, 0.95), slices.Max(res.lags), res.load)
		rep.lag = &res
	}
	if want["pending"] {
		res, err := b.pendingRun(ctx, o.events, o.settle)
		if err != nil {
			return fmt.Errorf("pending: %w", err)
		}
		progress("pending %d events: steady RSS %d MiB, peak %d MiB; drain %v (first tag after %v), peak RSS %d MiB",
			res.events, res.steadyRSS>>20, res.peakRSS>>20, res.drain.Round(time.Millisecond), res.firstTag.Round(time.Millisecond), res.drainPeakRSS>>20)
		rep.pending = &res
	}
	rep.write(stdout)
	return nil
}

// rotate returns ms rotated left by i, so that each way of copying takes
// each place in turn.
func rotate(ms []method, i int) []method {
	k := i % len(ms)
	return append(slices.Clone(ms[k:]), ms[:k]...)
}

// copySamples takes n samples of each method with sample, the methods
// taking each place in turn.
func copySamples(n int, what string, methods []method, progress func(string, ...any), sample func(m method, i int) (copySample, error)) (map[method][]copySample, error) {
	out := map[method][]copySample{}
	for i := range n {
		for _, m := range rotate(methods, i) {
			s, err := sample(m, i+1)
			if err != nil {
				return nil, fmt.Errorf("%s, sample %d, %s: %w", what, i+1, m, err)
			}
			progress("%-6s sample %d %-8s %8v  A CPU %6v  B CPU %6v  client CPU %6v  copier peak RSS %4d MiB  load %.1f",
				what, i+1, m, s.wall.Round(time.Millisecond), s.aCPU, s.bCPU, s.clientCPU, s.copierPeak>>20, s.load)
			out[m] = append(out[m], s)
		}
	}
	return out, nil
}

// methods returns ms, or the push rule alone without -peers, with the
// baseline's push rule after the rule with -baseline.
func (o options) methods(ms ...method) []method {
	if !o.peers {
		ms = ms[:1]
	}
	if o.baseline != "" {
		ms = slices.Insert(slices.Clone(ms), 1, viaBase)
	}
	return ms
}
