// Command pushpull compares the push and pull speed and the peak memory of
// Portcullis with distribution's own registry, both on filesystem storage,
// on this machine in one run. It pushes and pulls a 256 MiB image of four
// 64 MiB layers, and 200 small images, against a fresh registry process for
// every run, alternating the two registries, and prints a Markdown table of
// the medians, with Go's sha256 throughput as the ceiling.
//
// With -storage s3 it starts a MinIO server and compares Portcullis on it
// with distribution's s3 driver on it, a fresh bucket for every run, with
// Portcullis on the filesystem as a third column; it adds a workload of
// eight 64 MiB images pushed at once.
//
// With -auth it compares Portcullis on the filesystem with token auth off
// and on instead, and measures the token service from the outside: tokens
// issued per second, and the latency of a request with a cached token.
//
// Run it from the repository root:
//
//	go run ./bench/pushpull -n 3
//	go run ./bench/pushpull -n 3 -storage s3
//	go run ./bench/pushpull -n 3 -auth
//
// See bench/README.md for what it measures and the last results.
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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pushpull:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	n          int
	portcullis string
	upstream   string
	timeout    time.Duration
	keep       bool
	workload   string
	first      string
	storage    string
	minio      string
	s3log      string
	auth       bool
	tokens     int
	heads      int
	zot        string
	manifests  int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("pushpull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 3, "runs of each workload against each registry")
	fs.StringVar(&o.portcullis, "portcullis", "", "Portcullis binary (default: go build ./cmd/registry)")
	fs.StringVar(&o.upstream, "upstream", "", "distribution registry binary (default: the one scripts/install-tools.sh builds)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.StringVar(&o.workload, "workload", "all", "which workloads to run: big, small, concurrent or all (big and small; with -storage s3 also concurrent; with -auth also the token measurements, alone as tokens)")
	fs.StringVar(&o.first, "first", "portcullis", "which registry runs first in each pair: portcullis or distribution (to check for an order effect); with -auth: off or on, which goes first in the first run")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (registry logs and configs)")
	fs.StringVar(&o.storage, "storage", filesystem, "filesystem: both registries on the filesystem; s3: both on one MinIO server, with Portcullis on the filesystem as a third column")
	fs.StringVar(&o.s3log, "s3log", "", "with -storage s3, put a logging proxy in front of MinIO and write each run's S3 requests to a file in this directory (slows the S3 runs: not for timing)")
	fs.StringVar(&o.minio, "minio", "", "minio binary for -storage s3 (default: the one scripts/install-tools.sh builds)")
	fs.BoolVar(&o.auth, "auth", false, "compare Portcullis on the filesystem with token auth off and on (no distribution), and measure the token service")
	fs.IntVar(&o.tokens, "tokens", 1000, "with -auth: token requests of each kind per run")
	fs.IntVar(&o.heads, "heads", 5000, "with -auth: HEAD manifest requests per run")
	fs.StringVar(&o.zot, "zot", "", "zot binary: adds zot as a column (not built or installed by this program)")
	fs.IntVar(&o.manifests, "manifests", 20000, "manifest workload: GET requests, then as many HEAD requests, per run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.n < 1 {
		return errors.New("-n must be at least 1")
	}
	if o.storage != filesystem && o.storage != s3 && o.storage != "all" {
		return fmt.Errorf("-storage %q: want filesystem, s3 or all", o.storage)
	}
	if o.manifests < 16 {
		return errors.New("-manifests must be at least 16")
	}
	var plans []plan
	if o.auth {
		if o.storage != filesystem {
			return errors.New("-auth runs on the filesystem only")
		}
		if o.tokens < 1 || o.heads < 1 {
			return errors.New("-tokens and -heads must be at least 1")
		}
		if o.first != "off" && o.first != "on" && kind(o.first) != ours {
			return fmt.Errorf("-first %q: with -auth, want off or on", o.first)
		}
		if o.workload != "all" && o.workload != "big" && o.workload != "small" && o.workload != "tokens" {
			return fmt.Errorf("-workload %q: with -auth, want big, small, tokens or all", o.workload)
		}
		plans = []plan{planAuth(o.first == "on")}
	} else {
		if kind(o.first) != ours && kind(o.first) != upstream {
			return fmt.Errorf("-first %q: want portcullis or distribution", o.first)
		}
		if o.workload != "all" && rows[o.workload] == nil {
			return fmt.Errorf("-workload %q: want big, small, smallpar, manifest, concurrent or all", o.workload)
		}
		for _, st := range []string{filesystem, s3} {
			if o.storage == st || o.storage == "all" {
				plans = append(plans, planFor(st, kind(o.first), o.zot != ""))
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	work, err := os.MkdirTemp("", "pushpull-")
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

	bins := map[kind]string{zot: o.zot}
	if bins[ours], err = benchproc.Portcullis(ctx, o.portcullis, work, progress); err != nil {
		return err
	}
	var af *authFiles
	if o.auth {
		if af, err = newAuthFiles(ctx, bins[ours], work); err != nil {
			return err
		}
	} else if bins[upstream], err = toolBinary(ctx, o.upstream, "distribution-registry", "distribution", progress); err != nil {
		return err
	}
	var mc *minioServer
	if o.storage != filesystem {
		bin, err := toolBinary(ctx, o.minio, "minio", "minio", progress)
		if err != nil {
			return err
		}
		mc, err = startMinIO(ctx, bin, work)
		defer func() { err = errors.Join(err, mc.stop()) }()
		if err != nil {
			return err
		}
		progress("minio at %s", mc.Endpoint)
		if o.s3log != "" {
			if err := os.MkdirAll(o.s3log, 0o750); err != nil {
				return err
			}
			if mc.proxy, err = startS3Logger(mc.Endpoint); err != nil {
				return err
			}
			defer mc.proxy.close()
			progress("S3 requests logged in %s through %s", o.s3log, mc.proxy.endpoint)
		}
	}

	progress("generating random layers")
	all := map[string]*workload{}
	if all["big"], err = bigWorkload(4, 64<<20); err != nil {
		return err
	}
	if all["small"], err = smallWorkload(200, 4<<10, 1); err != nil {
		return err
	}
	if all["smallpar"], err = smallWorkload(200, 4<<10, 8); err != nil {
		return err
	}
	if all["manifest"], err = manifestWorkload(o.manifests, 16); err != nil {
		return err
	}
	shaMBps := sha256Throughput(all["big"], 3)
	progress("sha256: %.0f MB/s", shaMBps)
	if (o.storage != filesystem && o.workload == "all") || o.workload == "concurrent" {
		progress("generating random layers for the concurrent workload")
		if all["concurrent"], err = concurrentWorkload(8, 64<<20); err != nil {
			return err
		}
	}

	for _, p := range plans {
		var ws []*workload
		for _, name := range p.workloads {
			if all[name] != nil && (o.workload == name || o.workload == "all" || o.workload == "tokens") {
				ws = append(ws, all[name])
			}
		}
		if o.workload == "tokens" {
			ws = nil
		}
		results := map[string]map[target][]result{}
		for _, w := range ws {
			results[w.name] = map[target][]result{}
			for i := range o.n {
				for _, t := range p.order(i) {
					res, err := runOnce(ctx, w, t, bins[t.kind], work, i, mc, o.s3log, af)
					if err != nil {
						return fmt.Errorf("%s workload, run %d, %s: %w", w.name, i+1, t, err)
					}
					logRun(progress, w, i, t, res)
					results[w.name][t] = append(results[w.name][t], res)
				}
			}
		}
		if len(ws) > 0 {
			writeTable(stdout, p.table, ws, results, shaMBps, o.n)
			fmt.Fprintln(stdout)
		}
	}
	if o.auth && (o.workload == "all" || o.workload == "tokens") {
		tokens := map[bool][]tokenResult{}
		for i := range o.n {
			for _, t := range plans[0].order(i) {
				res, err := tokenOnce(ctx, t, bins[t.kind], work, i, af, o.tokens, o.heads)
				if err != nil {
					return fmt.Errorf("token measurements, run %d, %s: %w", i+1, t, err)
				}
				if t.auth {
					progress("tokens     run %d %-26s Basic %6.1f/s (CPU %v each)  anonymous %6.0f/s (CPU %v each)",
						i+1, t, res.basic.perSec(), res.basic.cpuPer().Round(time.Microsecond),
						res.anonymous.perSec(), res.anonymous.cpuPer().Round(time.Microsecond))
				}
				progress("heads      run %d %-26s median %v  p99 %v  registry CPU %v each",
					i+1, t, res.head.quantile(0.5).Round(time.Microsecond), res.head.quantile(0.99).Round(time.Microsecond),
					res.head.cpuPer().Round(time.Microsecond))
				tokens[t.auth] = append(tokens[t.auth], res)
			}
		}
		writeTokenTable(stdout, tokens[false], tokens[true], o.tokens, o.heads, o.n)
	}
	return nil
}

// plan is one table: its columns, the workloads it runs and the order of
// its targets in each run.
type plan struct {
	table     table
	workloads []string
	order     func(run int) []target
}

// planAuth returns the plan of -auth, Portcullis on the filesystem with
// auth off and on: they swap places every run, on first in the first run
// when onFirst.
func planAuth(onFirst bool) plan {
	off, on := target{kind: ours, storage: filesystem}, target{kind: ours, storage: filesystem, auth: true}
	t := table{
		columns: []column{{off, "Portcullis, auth off"}, {on, "Portcullis, auth on"}},
		ratios:  []ratio{{1, 0, "on/off"}},
	}
	return plan{table: t, workloads: []string{"big", "small"}, order: func(run int) []target {
		if (run%2 == 0) == onFirst {
			return []target{on, off}
		}
		return []target{off, on}
	}}
}

// planFor returns the plan for storage, with zot as a column when withZot.
// On the filesystem the registries alternate, first going first in every
// run. On S3 the targets rotate, so that each takes each place in turn;
// first goes first in the first run. The S3 table has Portcullis on the
// filesystem as a column, and Portcullis and distribution with redirect on.
func planFor(storage string, first kind, withZot bool) plan {
	p, d, z := target{kind: ours, storage: storage}, target{kind: upstream, storage: storage}, target{kind: zot, storage: storage}
	t := table{
		columns: []column{{p, "Portcullis"}, {d, "distribution v3.1.2"}},
		ratios:  []ratio{{0, 1, "ours/upstream"}},
	}
	order := []target{p, d}
	if first == upstream {
		order = []target{d, p}
	}
	if withZot {
		t.columns = append(t.columns, column{z, "zot"})
		t.ratios = append(t.ratios, ratio{2, 1, "zot/upstream"}, ratio{0, 2, "ours/zot"})
		order = append(order, z)
	}
	if storage == filesystem {
		return plan{table: t, workloads: []string{"big", "small", "smallpar", "manifest", "concurrent"}, order: func(int) []target { return order }}
	}
	for i := range t.columns {
		t.columns[i].heading += " on S3"
	}
	t.ratios[0].heading = "ours-s3/upstream-s3"
	t.minio = true
	f := target{kind: ours, storage: filesystem}
	pr, dr := target{kind: ours, storage: s3, redirect: true}, target{kind: upstream, storage: s3, redirect: true}
	n := len(t.columns)
	t.columns = append(t.columns, column{f, "Portcullis on filesystem"}, column{pr, "Portcullis on S3, redirect"}, column{dr, "distribution on S3, redirect"})
	t.ratios = append(t.ratios, ratio{n + 1, n + 2, "ours/upstream, redirect"})
	base := append(order, f, pr, dr)
	return plan{table: t, workloads: []string{"big", "small", "smallpar", "concurrent"}, order: func(run int) []target {
		k := run % len(base)
		return append(slices.Clone(base[k:]), base[:k]...)
	}}
}

// logRun reports one run's result on progress.
func logRun(progress func(string, ...any), w *workload, i int, t target, res result) {
	minio := ""
	if t.storage == s3 {
		minio = fmt.Sprintf("  MinIO CPU %7v", res.minioCPU)
	}
	if w.manifestRequests > 0 {
		progress("%-10s run %d %-30s GET %6.0f/s p99 %v  HEAD %6.0f/s p99 %v  registry CPU %7v  peak RSS %4d MiB",
			w.name, i+1, t, res.get.perSec(), res.get.quantile(0.99).Round(time.Microsecond),
			res.head.perSec(), res.head.quantile(0.99).Round(time.Microsecond), res.cpu, res.peakRSS>>20)
		return
	}
	progress("%-10s run %d %-30s push %8v  pull %8v  registry CPU %7v  peak RSS %4d MiB (idle %3d)%s",
		w.name, i+1, t, res.push.Round(time.Millisecond), res.pull.Round(time.Millisecond),
		res.cpu, res.peakRSS>>20, res.idleRSS>>20, minio)
	if res.s3Requests != "" {
		progress("%-10s run %d %-30s %s", w.name, i+1, t, res.s3Requests)
	}
}

// runOnce runs w once against a fresh registry of target t and stops it,
// whatever happens. A target on S3 gets a new bucket on mc, removed after;
// when mc has a logging proxy, its requests go to a file in logDir. A target
// with auth uses the key and user of a.
func runOnce(ctx context.Context, w *workload, t target, bin, work string, i int, mc *minioServer, logDir string, a *authFiles) (res result, err error) {
	var b *bucket
	if t.storage == s3 {
		if b, err = mc.newBucket(ctx); err != nil {
			return result{}, err
		}
		// The bucket stays until MinIO stops: see registry.stop.
		if mc.proxy != nil {
			f, err := os.Create(filepath.Join(logDir, fmt.Sprintf("%s-%s-%d.log", w.name, strings.NewReplacer("/", "-", "+", "-").Replace(t.String()), i+1)))
			if err != nil {
				return result{}, err
			}
			mc.proxy.to(f)
			defer func() {
				mc.proxy.to(nil)
				res.s3Requests = mc.proxy.summary()
				err = errors.Join(err, f.Close())
			}()
		}
	}
	// Start each run with no dirty pages left by the one before, so that
	// no registry pays for another's writeback.
	syscall.Sync()
	var minioStart time.Duration
	if b != nil {
		if minioStart, err = mc.cpu(); err != nil {
			return result{}, err
		}
	}
	reg, err := startRegistry(ctx, t, bin, work, i, b, a)
	defer func() {
		u, stopErr := reg.stop()
		res.usage = u
		if err == nil {
			err = stopErr
		}
		if b != nil && err == nil {
			var minioEnd time.Duration
			minioEnd, err = mc.cpu()
			res.minioCPU = minioEnd - minioStart
		}
	}()
	if err != nil {
		return result{}, err
	}
	return w.run(ctx, reg)
}

// toolBinary returns path, or the tool name as scripts/install-tools.sh
// builds it into its cache, running the script for tool if it is missing.
func toolBinary(ctx context.Context, path, name, tool string, progress func(string, ...any)) (string, error) {
	if path != "" {
		return path, nil
	}
	tools, err := benchproc.ToolsBin()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(tools, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	root, err := benchproc.RepoRoot(ctx)
	if err != nil {
		return "", err
	}
	progress("building %s with scripts/install-tools.sh %s", name, tool)
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "install-tools.sh"), tool)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scripts/install-tools.sh %s: %w\n%s", tool, err, out)
	}
	return bin, nil
}
