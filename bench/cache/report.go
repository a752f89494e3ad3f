package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchstat"
)

// metric is one row of the table: a value of each run of a workload, and
// the target its median must meet (nil: none).
type metric struct {
	label  string
	value  func(w *workload, r runResult) float64
	target *target
}

// target is a bound on a median.
type target struct {
	text string // as the table prints it: "≤ 1.10"
	met  func(median float64) bool
}

func atMost(v float64) *target {
	return &target{fmt.Sprintf("≤ %.2f", v), func(m float64) bool { return m <= v }}
}

func below(v float64, unit string) *target {
	return &target{fmt.Sprintf("< %.0f %s", v, unit), func(m float64) bool { return m < v }}
}

func seconds(d func(runResult) time.Duration) func(*workload, runResult) float64 {
	return func(_ *workload, r runResult) float64 { return d(r).Seconds() }
}

func millis(d func(runResult) time.Duration) func(*workload, runResult) float64 {
	return func(_ *workload, r runResult) float64 { return float64(d(r)) / float64(time.Millisecond) }
}

// ratio is a per-run ratio: runs are paired, so the machine's drift over
// the run affects both sides alike.
func ratio(a, b func(runResult) float64) func(*workload, runResult) float64 {
	return func(_ *workload, r runResult) float64 { return a(r) / b(r) }
}

func mib(n func(runResult) int64) func(*workload, runResult) float64 {
	return func(_ *workload, r runResult) float64 { return float64(n(r)) / (1 << 20) }
}

func wall(p func(runResult) pullResult) func(runResult) time.Duration {
	return func(r runResult) time.Duration { return p(r).wall }
}

func wallS(p func(runResult) pullResult) func(runResult) float64 {
	return func(r runResult) float64 { return p(r).wall.Seconds() }
}

func ttfb(p func(runResult) pullResult) func(runResult) time.Duration {
	return func(r runResult) time.Duration { return p(r).ttfb }
}

func firstByte(p func(runResult) pullResult) func(runResult) time.Duration {
	return func(r runResult) time.Duration { return p(r).firstByte }
}

func lastGap(p func(runResult) pullResult) func(runResult) time.Duration {
	return func(r runResult) time.Duration { return p(r).lastGap }
}

func mbps(p func(runResult) pullResult) func(*workload, runResult) float64 {
	return func(w *workload, r runResult) float64 { return float64(w.bytes()) / p(r).wall.Seconds() / 1e6 }
}

func upstreamPull(r runResult) pullResult  { return r.upstream }
func coldPull(r runResult) pullResult      { return r.cold }
func proxyColdPull(r runResult) pullResult { return r.proxyCold }

// section is a group of rows under a heading row.
type section struct {
	heading string
	rows    []metric
}

func sections() []section {
	return []section{
		{"**Warm hit** (pulls through the filled cache, within tagTTL) vs the image pushed to Portcullis", []metric{
			{label: "pull from Portcullis, image pushed to it (no cache), s ↓", value: seconds(func(r runResult) time.Duration { return r.direct })},
			{label: "warm hit through the Portcullis cache, s ↓", value: seconds(func(r runResult) time.Duration { return r.warm })},
			{label: "warm hit / direct ↓", value: ratio(
				func(r runResult) float64 { return r.warm.Seconds() },
				func(r runResult) float64 { return r.direct.Seconds() }), target: atMost(1.10)},
			{label: "Portcullis CPU time per pull, direct, ms ↓", value: millis(func(r runResult) time.Duration { return r.directCPU })},
			{label: "Portcullis CPU time per pull, warm hit, ms ↓", value: millis(func(r runResult) time.Duration { return r.warmCPU })},
			{label: "warm hit through distribution's proxy, s ↓", value: seconds(func(r runResult) time.Duration { return r.proxyWarm })},
		}},
		{"**Cold miss** (first pull through an empty cache) vs pulling from the upstream", []metric{
			{label: "pull straight from the upstream (distribution), s ↓", value: seconds(wall(upstreamPull))},
			{label: "cold miss through the Portcullis cache, s ↓", value: seconds(wall(coldPull))},
			{label: "cold miss through distribution's proxy, s ↓", value: seconds(wall(proxyColdPull))},
			{label: "Portcullis cold / upstream ↓", value: ratio(wallS(coldPull), wallS(upstreamPull)), target: atMost(1.30)},
			{label: "distribution proxy cold / upstream ↓", value: ratio(wallS(proxyColdPull), wallS(upstreamPull))},
			{label: "Portcullis cold / distribution proxy cold ↓", value: ratio(wallS(coldPull), wallS(proxyColdPull))},
			{label: "cold miss through the Portcullis cache, MB/s ↑", value: mbps(coldPull)},
		}},
		{"**Time to first byte** of the first layer on a cold miss (its GET to its first byte)", []metric{
			{label: "straight from the upstream, ms ↓", value: millis(ttfb(upstreamPull))},
			{label: "Portcullis cache, ms ↓", value: millis(ttfb(coldPull)), target: below(1000, "ms")},
			{label: "distribution proxy, ms ↓", value: millis(ttfb(proxyColdPull))},
			{label: "Portcullis cache, from the manifest GET, ms ↓", value: millis(firstByte(coldPull))},
			{label: "distribution proxy, from the manifest GET, ms ↓", value: millis(firstByte(proxyColdPull))},
		}},
		{"**Wait for the last bytes** of a layer on a cold miss (longest gap between the last two reads, over the layers)", []metric{
			{label: "straight from the upstream, ms ↓", value: millis(lastGap(upstreamPull))},
			{label: "Portcullis cache, ms ↓", value: millis(lastGap(coldPull))},
			{label: "distribution proxy, ms ↓", value: millis(lastGap(proxyColdPull))},
		}},
		{"**Memory and CPU** of the caching process over the cold miss", []metric{
			{label: "Portcullis cache peak RSS (VmHWM), MiB ↓", value: mib(func(r runResult) int64 { return r.cacheUsage.peakRSS })},
			{label: "distribution proxy peak RSS (VmHWM), MiB ↓", value: mib(func(r runResult) int64 { return r.proxyUsage.peakRSS })},
			{label: "Portcullis / distribution peak RSS ↓", value: ratio(
				func(r runResult) float64 { return float64(r.cacheUsage.peakRSS) },
				func(r runResult) float64 { return float64(r.proxyUsage.peakRSS) })},
			{label: "Portcullis cache CPU time, s ↓", value: seconds(func(r runResult) time.Duration { return r.cacheUsage.cpu })},
			{label: "distribution proxy CPU time, s ↓", value: seconds(func(r runResult) time.Duration { return r.proxyUsage.cpu })},
		}},
	}
}

// writeTable prints the medians of every metric as a Markdown table, a
// column per workload, each cell with the range of its n runs and, where
// the row has a target, ✓ or ✗.
func writeTable(out io.Writer, ws []*workload, results map[*workload][]runResult, n int, shaMBps float64) {
	fmt.Fprintf(out, "| median of %d runs (min–max) |", n)
	for _, w := range ws {
		fmt.Fprintf(out, " %s |", w)
	}
	fmt.Fprintf(out, " target |\n|---|%s---|\n", strings.Repeat("---:|", len(ws)))
	for _, s := range sections() {
		fmt.Fprintf(out, "| %s |%s |\n", s.heading, strings.Repeat(" |", len(ws)))
		for _, m := range s.rows {
			fmt.Fprintf(out, "| %s |", m.label)
			for _, w := range ws {
				v := make([]float64, len(results[w]))
				for i, r := range results[w] {
					v[i] = m.value(w, r)
				}
				c := benchstat.Cell(v)
				if m.target != nil && len(v) > 0 {
					if m.target.met(benchstat.Median(v)) {
						c += " ✓"
					} else {
						c += " ✗"
					}
				}
				fmt.Fprintf(out, " %s |", c)
			}
			t := ""
			if m.target != nil {
				t = m.target.text
			}
			fmt.Fprintf(out, " %s |\n", t)
		}
	}
	fmt.Fprintf(out, "| Go crypto/sha256 on this machine, MB/s (each cached byte is hashed by the cache and by the client) | %.0f |%s\n",
		shaMBps, strings.Repeat(" |", len(ws)))
}

// sha256Throughput hashes the layers of w rounds times and returns the
// median speed in MB/s (10^6 bytes per second).
func sha256Throughput(w *workload, rounds int) float64 {
	layers, _ := w.img.Layers()
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
