package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchstat"
)

// row is one line of the collector table: a value of each run.
type row struct {
	label string
	value func(collection) float64
	// exact rows print counts that must agree, with "same" or "differ"
	// in place of a ratio.
	exact bool
	// s3Only rows are left out for the filesystem.
	s3Only bool
}

var rows = []row{
	{label: "wall time, s ↓", value: func(c collection) float64 { return c.wall.Seconds() }},
	{label: "mark, s ↓", value: func(c collection) float64 { return c.mark.Seconds() }},
	{label: "sweep, s ↓", value: func(c collection) float64 { return c.sweep.Seconds() }},
	{label: "sweep, manifests + blobs deleted/s ↑", value: collection.deletesPerSecond},
	{label: "collector CPU time, s ↓", value: func(c collection) float64 { return c.cpu.Seconds() }},
	{label: "MinIO CPU time, s ↓", value: func(c collection) float64 { return c.minioCPU.Seconds() }, s3Only: true},
	{label: "peak RSS, MiB ↓", value: func(c collection) float64 { return float64(c.peakRSS) / (1 << 20) }},
	{label: "manifests + blobs deleted (as each counts them)", value: func(c collection) float64 { return float64(c.deletes) }, exact: true},
	{label: "blobs left (manifests included)", value: func(c collection) float64 { return float64(c.blobsLeft) }, exact: true},
	{label: "manifests left", value: func(c collection) float64 { return float64(c.manifestsLeft) }, exact: true},
	{label: "live blobs lost (must be 0)", value: func(c collection) float64 { return float64(c.missing) }, exact: true},
	{label: "garbage blobs left", value: func(c collection) float64 { return float64(c.extra) }, exact: true},
}

func writeTables(out io.Writer, o options, ds *dataset, liveBlobs int, storages []string, results map[string]map[string][]collection, lat *latency) {
	fmt.Fprintf(out, "\n%d manifests (%d live) in %d repositories, %d configs and layers; a correct collector leaves %d blobs and %d manifests.\n\n",
		len(ds.manifests), ds.liveManifests(), len(ds.repos), len(ds.blobs), liveBlobs, ds.liveManifests())
	fmt.Fprintf(out, "| %s | Portcullis `registry gc` | distribution v3.1.2 `garbage-collect --delete-untagged` | ours/peer |\n", heading(o.n))
	fmt.Fprintln(out, "|---|---:|---:|---:|")
	for _, storage := range storages {
		for _, r := range rows {
			if r.s3Only && storage != s3 {
				continue
			}
			a := values(results[storage][ours], r.value)
			b := values(results[storage][upstream], r.value)
			var ratio string
			switch {
			case len(a) == 0 || len(b) == 0:
			case r.exact && equal(a, b):
				ratio = "same"
			case r.exact:
				ratio = "differ"
			case benchstat.Median(b) > 0:
				ratio = fmt.Sprintf("%.2f", benchstat.Median(a)/benchstat.Median(b))
			}
			fmt.Fprintf(out, "| %s: %s | %s | %s | %s |\n", storage, r.label, cellOf(a, r.exact), cellOf(b, r.exact), ratio)
		}
	}
	if lat == nil {
		return
	}
	fmt.Fprintf(out, "\nManifest PUTs to Portcullis on S3 (%d goroutines), with `registry gc` in a loop on the same bucket (%d collections finished, %d failed) and without:\n\n",
		o.putWorkers, lat.gcRuns, lat.gcErrors)
	fmt.Fprintln(out, "| manifest PUT | without a collection | with collections running | with/without |")
	fmt.Fprintln(out, "|---|---:|---:|---:|")
	for _, q := range []struct {
		label string
		q     float64
	}{{"p50, ms ↓", 0.5}, {"p99, ms ↓", 0.99}, {"max, ms ↓", 1}} {
		a, b := ms(quantile(lat.without, q.q)), ms(quantile(lat.with, q.q))
		fmt.Fprintf(out, "| %s | %s | %s | %.2f |\n", q.label, benchstat.Num(a), benchstat.Num(b), b/a)
	}
	fmt.Fprintf(out, "| PUTs | %d | %d | |\n", len(lat.without), len(lat.with))
	fmt.Fprintf(out, "| PUTs not answered 201 | %d | | |\n", lat.failed)
	fmt.Fprintf(out, "| manifests and blobs of the PUTs gone afterwards (of %d checked) | %d | | |\n", lat.checked, lat.lost)
	if lat.firstErr != nil {
		fmt.Fprintf(out, "\nfirst failed PUT: %v\n", lat.firstErr)
	}
	if lat.gcFirstErr != nil {
		fmt.Fprintf(out, "\nfirst failed collection: %v\n", lat.gcFirstErr)
	}
}

func heading(n int) string {
	if n == 1 {
		return "one run each"
	}
	return fmt.Sprintf("median of %d runs (min–max)", n)
}

func values(cs []collection, f func(collection) float64) []float64 {
	v := make([]float64, len(cs))
	for i, c := range cs {
		v[i] = f(c)
	}
	return v
}

// cellOf prints counts whole, other values as benchstat does.
func cellOf(v []float64, exact bool) string {
	if !exact || len(v) == 0 {
		return benchstat.Cell(v)
	}
	s := fmt.Sprintf("%.0f", v[0])
	for _, x := range v[1:] {
		s += fmt.Sprintf(", %.0f", x)
	}
	return s
}

func equal(a, b []float64) bool { return len(a) > 0 && slices.Equal(a, b) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
