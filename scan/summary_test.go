package scan

import (
	"testing"

	"github.com/portcullis/portcullis/scan/osv"
)

// TestSummaryReaches: a rated finding counts by its severity, an unrated
// one as the policy counts it (critical without one, never with unknown).
func TestSummaryReaches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    *Summary
		want map[osv.Level]bool
	}{
		{"not scanned", &Summary{Status: StatusPending}, map[osv.Level]bool{osv.Low: false}},
		{"nil", nil, map[osv.Level]bool{osv.Low: false}},
		{"clean", &Summary{Counts: &SeverityCounts{}, WorstSeverity: "none"}, map[osv.Level]bool{osv.Low: false}},
		{"high", &Summary{Counts: &SeverityCounts{High: 1}, WorstSeverity: "high"},
			map[osv.Level]bool{osv.Low: true, osv.High: true, osv.Critical: false}},
		{"unrated without a policy", &Summary{Counts: &SeverityCounts{Unknown: 3}, WorstSeverity: "unknown"},
			map[osv.Level]bool{osv.Critical: true}},
		{"unrated counted as medium", &Summary{Counts: &SeverityCounts{Unknown: 3, Low: 1}, WorstSeverity: "low",
			Policy: &GateSummary{UnknownSeverity: "medium"}}, map[osv.Level]bool{osv.Medium: true, osv.High: false}},
		{"unrated never counted", &Summary{Counts: &SeverityCounts{Unknown: 3}, WorstSeverity: "unknown",
			Policy: &GateSummary{UnknownSeverity: "unknown"}}, map[osv.Level]bool{osv.Low: false}},
	}
	for _, tt := range tests {
		for l, want := range tt.want {
			if got := tt.s.Reaches(l); got != want {
				t.Errorf("%s: Reaches(%s) = %v, want %v", tt.name, l, got, want)
			}
		}
	}
}
