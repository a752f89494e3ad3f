// Command pushpull compares the push and pull speed and the peak memory of
// Portcullis with distribution's own registry, both on filesystem storage,
// on this machine in one run. It pushes and pulls a 256 MiB image of four
// 64 MiB layers, and 200 small images, against a fresh registry process for
// every run, alternating the two registries, and prints a Markdown table of
// the medians, with Go's sha256 throughput as the ceiling.
//
// Run it from the repository root:
//
//	go run ./bench/pushpull -n 3
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
	"strings"
	"syscall"
	"time"
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
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("pushpull", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 3, "runs of each workload against each registry")
	fs.StringVar(&o.portcullis, "portcullis", "", "Portcullis binary (default: go build ./cmd/registry)")
	fs.StringVar(&o.upstream, "upstream", "", "distribution registry binary (default: the one scripts/install-tools.sh builds)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.StringVar(&o.workload, "workload", "all", "which workloads to run: big, small or all")
	fs.StringVar(&o.first, "first", "portcullis", "which registry runs first in each pair: portcullis or distribution (to check for an order effect)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (registry logs and configs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.n < 1 {
		return errors.New("-n must be at least 1")
	}
	order := []kind{ours, upstream}
	switch kind(o.first) {
	case ours:
	case upstream:
		order = []kind{upstream, ours}
	default:
		return fmt.Errorf("-first %q: want portcullis or distribution", o.first)
	}
	if o.workload != "all" && rows[o.workload] == nil {
		return fmt.Errorf("-workload %q: want big, small or all", o.workload)
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

	bins := map[kind]string{}
	if bins[ours], err = portcullisBinary(ctx, o.portcullis, work, progress); err != nil {
		return err
	}
	if bins[upstream], err = upstreamBinary(ctx, o.upstream, progress); err != nil {
		return err
	}

	progress("generating random layers")
	big, err := bigWorkload(4, 64<<20)
	if err != nil {
		return err
	}
	small, err := smallWorkload(200, 4<<10)
	if err != nil {
		return err
	}
	shaMBps := sha256Throughput(big, 3)
	progress("sha256: %.0f MB/s", shaMBps)

	results := map[string]map[kind][]result{}
	var ws []*workload
	for _, w := range []*workload{big, small} {
		if o.workload == "all" || o.workload == w.name {
			ws = append(ws, w)
		}
	}
	for _, w := range ws {
		results[w.name] = map[kind][]result{}
		for i := range o.n {
			for _, k := range order {
				res, err := runOnce(ctx, w, k, bins[k], work, i)
				if err != nil {
					return fmt.Errorf("%s workload, run %d, %s: %w", w.name, i+1, k, err)
				}
				progress("%-6s run %d %-13s push %8v  pull %8v  registry CPU %7v  peak RSS %4d MiB",
					w.name, i+1, k, res.push.Round(time.Millisecond), res.pull.Round(time.Millisecond),
					res.cpu, res.peakRSS>>20)
				results[w.name][k] = append(results[w.name][k], res)
			}
		}
	}
	writeTable(stdout, ws, results, shaMBps, o.n)
	return nil
}

// runOnce runs w once against a fresh registry of kind k and stops it,
// whatever happens.
func runOnce(ctx context.Context, w *workload, k kind, bin, work string, i int) (res result, err error) {
	// Start each run with no dirty pages left by the one before (its data
	// directory was just removed), so that neither registry pays for the
	// other's writeback.
	syscall.Sync()
	reg, err := startRegistry(ctx, k, bin, work, i)
	defer func() {
		u, stopErr := reg.stop()
		res.usage = u
		if err == nil {
			err = stopErr
		}
	}()
	if err != nil {
		return result{}, err
	}
	return w.run(ctx, reg)
}

// portcullisBinary returns path, or builds ./cmd/registry into work.
func portcullisBinary(ctx context.Context, path, work string, progress func(string, ...any)) (string, error) {
	if path != "" {
		return path, nil
	}
	root, err := repoRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(work, "portcullis")
	progress("building %s", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/registry")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/registry: %w\n%s", err, out)
	}
	return bin, nil
}

// upstreamBinary returns path, or distribution's registry as
// scripts/install-tools.sh builds it, running the script if it is missing.
func upstreamBinary(ctx context.Context, path string, progress func(string, ...any)) (string, error) {
	if path != "" {
		return path, nil
	}
	tools := os.Getenv("PORTCULLIS_TOOLS")
	if tools == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		tools = filepath.Join(home, ".cache", "portcullis-tools")
	}
	bin := filepath.Join(tools, "bin", "distribution-registry")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	root, err := repoRoot(ctx)
	if err != nil {
		return "", err
	}
	progress("building distribution's registry with scripts/install-tools.sh")
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "install-tools.sh"), "distribution")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scripts/install-tools.sh distribution: %w\n%s", err, out)
	}
	return bin, nil
}

// repoRoot is the directory of the main module's go.mod.
func repoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the Portcullis module: run from the repository root")
	}
	return filepath.Dir(mod), nil
}
