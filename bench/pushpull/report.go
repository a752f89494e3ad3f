package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchstat"
)

// sha256Throughput hashes the layers of w rounds times and returns the
// median speed in MB/s (10^6 bytes per second): the ceiling for a registry
// that must hash every byte it receives.
func sha256Throughput(w *workload, rounds int) float64 {
	layers, _ := w.images[0].Layers()
	speeds := make([]float64, rounds)
	for i := range speeds {
		h := sha256.New()
		start := time.Now()
		var n int64
		for _, l := range layers {
			rc, _ := l.Compressed() // static layers: a reader over memory
			m, _ := io.Copy(h, rc)
			n += m
		}
		h.Sum(nil)
		speeds[i] = float64(n) / time.Since(start).Seconds() / 1e6
	}
	return benchstat.Median(speeds)
}

// metric is one row of the table.
type metric struct {
	label string
	value func(w *workload, r result) float64
}

func mbPerSec(d func(result) time.Duration) func(*workload, result) float64 {
	return func(w *workload, r result) float64 { return float64(w.bytes) / d(r).Seconds() / 1e6 }
}

func imagesPerSec(d func(result) time.Duration) func(*workload, result) float64 {
	return func(w *workload, r result) float64 { return float64(len(w.images)) / d(r).Seconds() }
}

func peakMiB(_ *workload, r result) float64 { return float64(r.peakRSS) / (1 << 20) }

func cpuSeconds(_ *workload, r result) float64 { return r.cpu.Seconds() }

func pushTime(r result) time.Duration { return r.push }
func pullTime(r result) time.Duration { return r.pull }

func busyPercent(f func(result) float64) func(*workload, result) float64 {
	return func(_ *workload, r result) float64 { return 100 * f(r) }
}

func aboveIdleMiB(_ *workload, r result) float64 { return float64(r.peakRSS-r.idleRSS) / (1 << 20) }

// minioCPUSeconds is NaN on the filesystem, where there is no MinIO.
func minioCPUSeconds(_ *workload, r result) float64 {
	if r.minioCPU == 0 {
		return math.NaN()
	}
	return r.minioCPU.Seconds()
}

// rows are the table's metrics for the workload named by the key.
var rows = map[string][]metric{
	"big": {
		{"256 MiB image (4 × 64 MiB) push, MB/s ↑", mbPerSec(pushTime)},
		{"256 MiB image (4 × 64 MiB) pull, MB/s ↑", mbPerSec(pullTime)},
		{"256 MiB image: registry CPU time, s ↓", cpuSeconds},
		{"256 MiB image: registry peak RSS, MiB ↓", peakMiB},
		{"256 MiB image push: machine CPU busy, % of all cores", busyPercent(func(r result) float64 { return r.pushBusy })},
		{"256 MiB image pull: machine CPU busy, % of all cores", busyPercent(func(r result) float64 { return r.pullBusy })},
	},
	"small": {
		{"200 small images push, images/s ↑", imagesPerSec(pushTime)},
		{"200 small images pull, images/s ↑", imagesPerSec(pullTime)},
		{"200 small images: registry CPU time, s ↓", cpuSeconds},
		{"200 small images: registry peak RSS, MiB ↓", peakMiB},
	},
	"smallpar": {
		{"200 small images, 8 pushers at once, images/s ↑", imagesPerSec(pushTime)},
		{"200 small images, 8 pullers at once, images/s ↑", imagesPerSec(pullTime)},
		{"200 small images, 8 at once: registry CPU time, s ↓", cpuSeconds},
		{"200 small images, 8 at once: registry peak RSS, MiB ↓", peakMiB},
	},
	"manifest": {
		{"manifest GET by tag, 16 connections, req/s ↑", func(_ *workload, r result) float64 { return r.get.perSec() }},
		{"manifest GET: latency p99, ms ↓", func(_ *workload, r result) float64 { return millis(r.get.quantile(0.99)) }},
		{"manifest GET: registry CPU per request, µs ↓", func(_ *workload, r result) float64 { return micros(r.get.cpuPer()) }},
		{"manifest HEAD by tag, 16 connections, req/s ↑", func(_ *workload, r result) float64 { return r.head.perSec() }},
		{"manifest HEAD: latency p99, ms ↓", func(_ *workload, r result) float64 { return millis(r.head.quantile(0.99)) }},
		{"manifest HEAD: registry CPU per request, µs ↓", func(_ *workload, r result) float64 { return micros(r.head.cpuPer()) }},
		{"manifest GET and HEAD: registry peak RSS, MiB ↓", peakMiB},
	},
	"concurrent": {
		{"8 × 64 MiB images pushed at once, MB/s ↑", mbPerSec(pushTime)},
		{"8 × 64 MiB images pulled at once, MB/s ↑", mbPerSec(pullTime)},
		{"8 × 64 MiB at once: registry CPU time, s ↓", cpuSeconds},
		{"8 × 64 MiB at once: registry peak RSS, MiB ↓", peakMiB},
		{"8 × 64 MiB at once: peak RSS above idle, MiB ↓", aboveIdleMiB},
	},
}

// minioRow is the row added to each workload when registries run on S3.
func minioRow(w *workload) metric {
	prefix := map[string]string{
		"big":        "256 MiB image",
		"small":      "200 small images",
		"smallpar":   "200 small images, 8 at once",
		"manifest":   "manifest GET and HEAD",
		"concurrent": "8 × 64 MiB at once",
	}[w.name]
	return metric{prefix + ": MinIO CPU time, s ↓", minioCPUSeconds}
}

// column is one column of the table: a target and its heading.
type column struct {
	target  target
	heading string
}

// ratio is a column of the table dividing the medians of two others.
type ratio struct {
	of, to  int // indexes into the table's columns
	heading string
}

// table is what writeTable prints.
type table struct {
	columns []column
	ratios  []ratio
	// minio adds the MinIO CPU time row to each workload.
	minio bool
}

// writeTable prints the medians of every metric as a Markdown table, each
// cell with the range of its n runs.
func writeTable(out io.Writer, t table, ws []*workload, results map[string]map[target][]result, shaMBps float64, n int) {
	fmt.Fprintf(out, "| workload (median of %d runs, min–max) |", n)
	for _, c := range t.columns {
		fmt.Fprintf(out, " %s |", c.heading)
	}
	for _, r := range t.ratios {
		fmt.Fprintf(out, " %s |", r.heading)
	}
	fmt.Fprintf(out, "\n|---|%s\n", strings.Repeat("---:|", len(t.columns)+len(t.ratios)))
	for _, w := range ws {
		ms := rows[w.name]
		if t.minio {
			ms = append(slices.Clone(ms), minioRow(w))
		}
		for _, m := range ms {
			fmt.Fprintf(out, "| %s |", m.label)
			meds := make([]float64, len(t.columns))
			for i, c := range t.columns {
				v := values(w, results[w.name][c.target], m)
				meds[i] = benchstat.Median(v)
				fmt.Fprintf(out, " %s |", benchstat.Cell(v))
			}
			for _, r := range t.ratios {
				cell := ""
				if v := meds[r.of] / meds[r.to]; !math.IsNaN(v) && !math.IsInf(v, 0) {
					cell = fmt.Sprintf("%.2f", v)
				}
				fmt.Fprintf(out, " %s |", cell)
			}
			fmt.Fprintln(out)
		}
	}
	fmt.Fprintf(out, "| Go crypto/sha256 over 256 MiB, MB/s (ceiling) | %.0f |%s\n", shaMBps, strings.Repeat(" |", len(t.columns)+len(t.ratios)-1))
}

func values(w *workload, rs []result, m metric) []float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = m.value(w, r)
	}
	return v
}
