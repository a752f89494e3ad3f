package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gc:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	manifests, blobs, perRepo int
	small                     bool
	n                         int
	portcullis, upstream      string
	minio                     string
	storage                   string
	collector                 string
	latency                   bool
	puts, putWorkers          int
	seedWorkers               int
	timeout                   time.Duration
	keep                      bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.manifests, "manifests", 10000, "manifests in the dataset")
	fs.IntVar(&o.blobs, "blobs", 50000, "configs and layers in the dataset (the manifests are blobs too, on top)")
	fs.IntVar(&o.perRepo, "per-repo", 20, "manifests in each repository (a multiple of 4)")
	fs.BoolVar(&o.small, "small", false, "a quick run: 1,000 manifests, 5,000 blobs, 500 PUTs (overrides -manifests, -blobs, -puts)")
	fs.IntVar(&o.n, "n", 1, "runs of each collector on each backend; the table shows the median")
	fs.StringVar(&o.portcullis, "portcullis", "", "Portcullis binary (default: go build ./cmd/registry)")
	fs.StringVar(&o.upstream, "distribution", "", "distribution registry binary (default: distribution-registry in the tools bin of scripts/install-tools.sh)")
	fs.StringVar(&o.minio, "minio", "", "minio binary (default: minio in the tools bin of scripts/install-tools.sh)")
	fs.StringVar(&o.storage, "storage", "all", "filesystem, s3 or all")
	fs.StringVar(&o.collector, "collector", "both", "portcullis, distribution or both")
	fs.BoolVar(&o.latency, "latency", true, "measure manifest PUT latency with and without a collection running (S3)")
	fs.IntVar(&o.puts, "puts", 2000, "manifest PUTs in each latency phase (at least; the phase with a collection goes on until one collection finished)")
	fs.IntVar(&o.putWorkers, "put-workers", 4, "goroutines that PUT manifests")
	fs.IntVar(&o.seedWorkers, "seed-workers", 32, "goroutines that write the dataset")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Hour, "give up after this long")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, collector output and logs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.small {
		o.manifests, o.blobs, o.puts = 1000, 5000, 500
	}
	if o.n < 1 || o.puts < 1 || o.putWorkers < 1 || o.seedWorkers < 1 {
		return errors.New("-n, -puts, -put-workers and -seed-workers must be at least 1")
	}
	var storages []string
	switch o.storage {
	case "all":
		storages = []string{filesystem, s3}
	case filesystem, s3:
		storages = []string{o.storage}
	default:
		return fmt.Errorf("-storage %q: want filesystem, s3 or all", o.storage)
	}
	collectors := []string{ours, upstream}
	switch o.collector {
	case "both":
	case ours, upstream:
		collectors = []string{o.collector}
	default:
		return fmt.Errorf("-collector %q: want portcullis, distribution or both", o.collector)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	progress := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, a...)...)
	}

	ds, err := newDataset(o.manifests, o.blobs, o.perRepo)
	if err != nil {
		return err
	}
	live := ds.live()
	progress("dataset: %d manifests (%d tagged) in %d repositories, %d blobs; %d objects a copy; a correct collector keeps %d blobs (manifests included) and %d manifests",
		len(ds.manifests), ds.liveManifests(), len(ds.repos), len(ds.blobs), ds.count(), len(live), ds.liveManifests())

	work, err := os.MkdirTemp("", "gcbench-")
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
	bins := map[string]string{}
	if o.collector != upstream {
		if bins[ours], err = benchproc.Portcullis(ctx, o.portcullis, work, progress); err != nil {
			return err
		}
	}
	if o.collector != ours {
		if bins[upstream], err = benchproc.Tool(o.upstream, "distribution-registry"); err != nil {
			return err
		}
	}
	var m *benchproc.MinIO
	if o.storage != filesystem {
		bin, err := benchproc.Tool(o.minio, "minio")
		if err != nil {
			return err
		}
		m, err = benchproc.StartMinIO(ctx, bin, work)
		defer func() { err = errors.Join(err, m.Stop()) }()
		if err != nil {
			return err
		}
		progress("minio at %s", m.Endpoint)
	}

	results := map[string]map[string][]collection{}
	for _, storage := range storages {
		results[storage] = map[string][]collection{}
		for i := range o.n {
			order := slices.Clone(collectors)
			if i%2 == 1 {
				slices.Reverse(order)
			}
			for _, who := range order {
				c, err := collectOnce(ctx, who, bins[who], storage, m, ds, live, work, i, o.seedWorkers, progress)
				if err != nil {
					return fmt.Errorf("%s on %s, run %d: %w", who, storage, i+1, err)
				}
				results[storage][who] = append(results[storage][who], c)
			}
		}
	}
	var lat *latency
	if o.latency && m != nil && o.collector != upstream {
		st, err := newS3Store(ctx, m)
		if err != nil {
			return err
		}
		took, err := seed(ctx, st, ds, o.seedWorkers)
		if err != nil {
			return errors.Join(err, st.remove(context.WithoutCancel(ctx)))
		}
		progress("latency: seeded %s in %v", st.bucket, took.Round(time.Millisecond))
		l, err := measureLatency(ctx, bins[ours], st, ds, filepath.Join(work, "latency"), o.puts, o.putWorkers, progress)
		err = errors.Join(err, st.remove(context.WithoutCancel(ctx)))
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		lat = &l
	}
	writeTables(stdout, o, ds, len(live), storages, results, lat)
	return nil
}

// collectOnce seeds a fresh copy of ds on storage, runs the collector who
// on it, checks what it left against live, and removes the copy.
func collectOnce(ctx context.Context, who, bin, storage string, m *benchproc.MinIO, ds *dataset, live map[digest.Digest]bool, work string, i, seedWorkers int, progress func(string, ...any)) (c collection, err error) {
	name := fmt.Sprintf("%s-%s-%d", who, storage, i+1)
	var st store
	if storage == s3 {
		if st, err = newS3Store(ctx, m); err != nil {
			return c, err
		}
	} else {
		st = &fsStore{dir: filepath.Join(work, name+"-root")}
	}
	defer func() { err = errors.Join(err, st.remove(context.WithoutCancel(ctx))) }()
	took, err := seed(ctx, st, ds, seedWorkers)
	if err != nil {
		return c, err
	}
	// The collector should not pay for writing back the seeding.
	syscall.Sync()
	progress("%-28s seeded in %v", name, took.Round(time.Millisecond))
	var minioStart time.Duration
	if m != nil && storage == s3 {
		if minioStart, err = benchproc.CPUTime(m.Pid()); err != nil {
			return c, err
		}
	}
	if who == ours {
		c, _, err = runOurs(ctx, bin, st, work, name)
	} else {
		c, err = runUpstream(ctx, bin, st, work, name)
	}
	if err != nil {
		return c, err
	}
	if m != nil && storage == s3 {
		end, err := benchproc.CPUTime(m.Pid())
		if err != nil {
			return c, err
		}
		c.minioCPU = end - minioStart
	}
	blobs, revisions, err := st.scan(ctx)
	if err != nil {
		return c, err
	}
	c.blobsLeft, c.manifestsLeft = len(blobs), revisions
	for d := range live {
		if !blobs[d] {
			c.missing++
		}
	}
	for d := range blobs {
		if !live[d] {
			c.extra++
		}
	}
	progress("%-28s wall %v  mark %v  sweep %v (%d deletes, %.0f/s)  CPU %v  peak RSS %d MiB  MinIO CPU %v  left %d blobs, %d manifests  lost %d  not collected %d",
		name, c.wall.Round(time.Millisecond), c.mark.Round(time.Millisecond), c.sweep.Round(time.Millisecond),
		c.deletes, c.deletesPerSecond(), c.cpu.Round(time.Millisecond), c.peakRSS>>20, c.minioCPU.Round(time.Millisecond),
		c.blobsLeft, c.manifestsLeft, c.missing, c.extra)
	return c, nil
}
