package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchstat"
)

// report holds every result of a run, for the Markdown tables.
type report struct {
	o          options
	big, small map[method][]copySample
	lag        *lagResult
	pending    *pendingResult
}

// columnNames are the headings of the copy tables.
var columnNames = map[method]string{
	viaRule:    "push rule (A → B)",
	viaBase:    "push rule, baseline binary",
	viaCrane:   "`crane copy`",
	viaRegctl:  "`regctl image copy`",
	viaCraneP4: "`crane copy`, 4 at once",
}

// copyRow is one line of a copy table.
type copyRow struct {
	label string
	value func(copySample) float64
	// ruleOnly rows are empty for the peers, peerOnly rows for the rule.
	ruleOnly, peerOnly bool
}

func (r *report) write(out io.Writer) {
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	if r.big != nil {
		bytes := float64(256 << 20)
		fmt.Fprintf(out, "\nOne 256 MiB image (4 × 64 MiB layers), A → B on %s, %s; load average %s:\n\n",
			r.o.storage, heading(r.o.n), loadRange(r.big))
		r.copyTable(out, r.big, []method{viaRule, viaBase, viaCrane, viaRegctl}, []copyRow{
			{label: "time, s ↓", value: func(s copySample) float64 { return s.wall.Seconds() }},
			{label: "MB/s ↑", value: func(s copySample) float64 { return bytes / 1e6 / s.wall.Seconds() }},
			{label: "site A CPU, s", value: func(s copySample) float64 { return s.aCPU.Seconds() }},
			{label: "site B CPU, s", value: func(s copySample) float64 { return s.bCPU.Seconds() }},
			{label: "client CPU, s", value: func(s copySample) float64 { return s.clientCPU.Seconds() }, peerOnly: true},
			{label: "peak RSS of the copier (A / the client), MiB", value: func(s copySample) float64 { return mib(s.copierPeak) }},
		})
		if fast, ok := fasterPeer(r.big, viaCrane, viaRegctl); ok {
			fmt.Fprintf(out, "\nPush rule against the faster peer (%s): %.2f× its speed (target ≥ 0.9×).\n",
				columnNames[fast], median(r.big[fast])/median(r.big[viaRule]))
		}
	}
	if r.small != nil {
		n := r.o.small
		fmt.Fprintf(out, "\n%d small images (3 × 4 KiB layers each, %d repositories), A → B on %s, %s; load average %s:\n\n",
			n, n/10, r.o.storage, heading(r.o.n), loadRange(r.small))
		r.copyTable(out, r.small, []method{viaRule, viaBase, viaCrane, viaRegctl, viaCraneP4}, []copyRow{
			{label: "time, s ↓", value: func(s copySample) float64 { return s.wall.Seconds() }},
			{label: "images/s ↑", value: func(s copySample) float64 { return float64(n) / s.wall.Seconds() }},
			{label: "of which the tag PUTs at A, s", value: func(s copySample) float64 { return s.tagging.Seconds() }, ruleOnly: true},
			{label: "site A CPU, s", value: func(s copySample) float64 { return s.aCPU.Seconds() }},
			{label: "site B CPU, s", value: func(s copySample) float64 { return s.bCPU.Seconds() }},
			{label: "client CPU, s", value: func(s copySample) float64 { return s.clientCPU.Seconds() }, peerOnly: true},
			{label: "peak RSS of the copier (A / the largest client), MiB", value: func(s copySample) float64 { return mib(s.copierPeak) }},
		})
		if fast, ok := fasterPeer(r.small, viaCrane, viaRegctl); ok {
			fmt.Fprintf(out, "\nPush rule against the faster peer one by one (%s): %.2f× its speed (target ≥ 2×); against `crane copy` 4 at once: %.2f×.\n",
				columnNames[fast], median(r.small[fast])/median(r.small[viaRule]), median(r.small[viaCraneP4])/median(r.small[viaRule]))
		}
	}
	if l := r.lag; l != nil {
		mean := time.Duration(0)
		for _, v := range l.lags {
			mean += v
		}
		mean /= time.Duration(len(l.lags))
		fmt.Fprintf(out, "\nEvent lag: %d images (3 × 4 KiB layers) pushed to A at %.1f/s; from the end of each push until B answers the tag (polled every 10 ms); load average %.1f:\n\n",
			len(l.lags), l.rate, l.load)
		fmt.Fprintln(out, "| lag | ms |")
		fmt.Fprintln(out, "|---|---:|")
		for _, q := range []struct {
			label string
			v     time.Duration
		}{{"p50", quantile(l.lags, 0.5)}, {"p95", quantile(l.lags, 0.95)}, {"max", slices.Max(l.lags)}, {"mean", mean}} {
			fmt.Fprintf(out, "| %s | %s |\n", q.label, benchstat.Num(ms(q.v)))
		}
		fmt.Fprintf(out, "| site A CPU over the run (%v), s | %s |\n", l.elapsed.Round(time.Second), benchstat.Num(l.aCPU.Seconds()))
		fmt.Fprintf(out, "| site B CPU over the run, s | %s |\n", benchstat.Num(l.bCPU.Seconds()))
	}
	if p := r.pending; p != nil {
		fmt.Fprintf(out, "\nPending events: B stopped, %d tags PUT at A (8 at a time) onto distinct small manifests, A left %v with them pending, then B started; load average %.1f:\n\n",
			p.events, r.o.settle, p.load)
		fmt.Fprintln(out, "| | |")
		fmt.Fprintln(out, "|---|---:|")
		fmt.Fprintf(out, "| tag PUTs at A with B down, s | %s |\n", benchstat.Num(p.put.Seconds()))
		fmt.Fprintf(out, "| pending at A (its status API) | %d |\n", p.pendingSeen)
		fmt.Fprintf(out, "| A's RSS before the PUTs, MiB | %s |\n", benchstat.Num(mib(p.idleRSS)))
		fmt.Fprintf(out, "| A's peak RSS until B started, MiB | %s |\n", benchstat.Num(mib(p.peakRSS)))
		fmt.Fprintf(out, "| A's steady RSS with the events pending (median), MiB | %s |\n", benchstat.Num(mib(p.steadyRSS)))
		fmt.Fprintf(out, "| B ready → first tag at B, s | %s |\n", benchstat.Num(p.firstTag.Seconds()))
		fmt.Fprintf(out, "| B ready → nothing pending at A, s | %s |\n", benchstat.Num(p.drain.Seconds()))
		fmt.Fprintf(out, "| events/s from the first tag on | %s |\n", benchstat.Num(float64(p.events)/(p.drain-p.firstTag).Seconds()))
		fmt.Fprintf(out, "| A's peak RSS during the drain, MiB | %s |\n", benchstat.Num(mib(p.drainPeakRSS)))
		fmt.Fprintf(out, "| A's CPU during the drain, s | %s |\n", benchstat.Num(p.drainCPU.Seconds()))
		fmt.Fprintf(out, "| tags at B afterwards | %d |\n", p.atB)
	}
}

// copyTable prints a table of rows with a column per method.
func (r *report) copyTable(out io.Writer, res map[method][]copySample, ms []method, rows []copyRow) {
	ms = slices.DeleteFunc(slices.Clone(ms), func(m method) bool { return len(res[m]) == 0 })
	fmt.Fprint(out, "| |")
	for _, m := range ms {
		fmt.Fprintf(out, " %s |", columnNames[m])
	}
	fmt.Fprint(out, "\n|---|")
	for range ms {
		fmt.Fprint(out, "---:|")
	}
	fmt.Fprintln(out)
	for _, row := range rows {
		fmt.Fprintf(out, "| %s |", row.label)
		for _, m := range ms {
			cell := ""
			if !(row.ruleOnly && !m.rule()) && !(row.peerOnly && m.rule()) {
				cell = benchstat.Cell(values(res[m], row.value))
			}
			fmt.Fprintf(out, " %s |", cell)
		}
		fmt.Fprintln(out)
	}
}

func heading(n int) string {
	if n == 1 {
		return "one sample each"
	}
	return fmt.Sprintf("median of %d samples each (min–max)", n)
}

func values(ss []copySample, f func(copySample) float64) []float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return v
}

// median is the median time of ss, in seconds.
func median(ss []copySample) float64 {
	return benchstat.Median(values(ss, func(s copySample) float64 { return s.wall.Seconds() }))
}

// fasterPeer is the peer with the lower median time; false when the
// peers did not run.
func fasterPeer(res map[method][]copySample, a, b method) (method, bool) {
	if len(res[a]) == 0 || len(res[b]) == 0 {
		return "", false
	}
	if median(res[b]) < median(res[a]) {
		return b, true
	}
	return a, true
}

// loadRange prints the range of the load averages at the samples' starts.
func loadRange(res map[method][]copySample) string {
	var v []float64
	for _, ss := range res {
		for _, s := range ss {
			v = append(v, s.load)
		}
	}
	if len(v) == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f–%.1f", slices.Min(v), slices.Max(v))
}

// quantile returns the q-quantile (nearest rank) of v.
func quantile(v []time.Duration, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
