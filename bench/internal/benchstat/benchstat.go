// Package benchstat summarises the repeated measurements of the benchmarks
// for their Markdown tables: medians and ranges, printed to the precision
// the noise of one machine allows.
package benchstat

import (
	"fmt"
	"math"
	"slices"
)

// Cell prints the median of v with its range, "12 (10–15)", or v alone
// when it holds one value; "" when v is empty or its first value is NaN
// (no measurement).
func Cell(v []float64) string {
	if len(v) == 0 || math.IsNaN(v[0]) {
		return ""
	}
	if len(v) == 1 {
		return Num(v[0])
	}
	return fmt.Sprintf("%s (%s–%s)", Num(Median(v)), Num(slices.Min(v)), Num(slices.Max(v)))
}

// Num prints v with two decimals below 10, as a whole number above.
func Num(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// Median returns the middle value of v (the mean of the middle two for an
// even count). v must not be empty.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
