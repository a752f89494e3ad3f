package admission

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
)

var dbModified = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func finding(id, pkg string, level osv.Level, score float64, fixed string) scan.Finding {
	return scan.Finding{ID: id, Ecosystem: "Debian:12", Package: pkg, Version: "1.0", FixedVersion: fixed,
		Severity: osv.Rating{Level: level, Score: score}}
}

func report(findings ...scan.Finding) *scan.Report {
	return &scan.Report{DB: scan.DBInfo{Digest: "sha256:db", Modified: dbModified, Records: 10}, Packages: 3, Findings: findings}
}

// TestSummarize: the review's scan object for each status, the counts,
// the worst severity, the policy and the worst findings first.
func TestSummarize(t *testing.T) {
	t.Parallel()
	mixed := report(
		finding("DEBIAN-CVE-1", "perl", osv.Unknown, 0, ""),
		finding("CVE-2", "openssl", osv.High, 7.5, "3.0.2"),
		finding("CVE-3", "zlib", osv.Critical, 9.8, "1.3"),
		finding("CVE-4", "bash", osv.Low, 2, ""),
		finding("CVE-5", "curl", osv.Medium, 5, "8.0"),
		finding("CVE-6", "curl", osv.High, 8.1, ""),
	)
	db := &ScanDatabase{Digest: "sha256:db", Modified: dbModified}
	tests := []struct {
		name string
		in   scan.Outcome
		want *ScanSummary
	}{
		{
			name: "scanned with a failing policy",
			in: scan.Outcome{Status: scan.StatusScanned, Report: mixed, Gate: &scan.GateOutcome{
				Name: "prod", Mode: "audit", MaxSeverity: "high", UnknownSeverity: "critical",
				Result: scan.GateResult{Pass: false, Violations: []scan.Finding{mixed.Findings[0], mixed.Findings[2]}},
			}},
			want: &ScanSummary{Status: "scanned", Database: db,
				Counts:        &SeverityCounts{Critical: 1, High: 2, Medium: 1, Low: 1, Unknown: 1},
				WorstSeverity: "critical",
				Policy:        &ScanPolicyResult{Name: "prod", Mode: "audit", MaxSeverity: "high", UnknownSeverity: "critical", Violations: 2},
				Findings: []ScanFinding{
					{ID: "CVE-3", Package: "zlib", Version: "1.0", FixedVersion: "1.3", Severity: "critical"},
					// Unrated counts as critical, as the policy counts it,
					// after the rated criticals.
					{ID: "DEBIAN-CVE-1", Package: "perl", Version: "1.0", Severity: "unknown"},
					{ID: "CVE-6", Package: "curl", Version: "1.0", Severity: "high"},
					{ID: "CVE-2", Package: "openssl", Version: "1.0", FixedVersion: "3.0.2", Severity: "high"},
					{ID: "CVE-5", Package: "curl", Version: "1.0", FixedVersion: "8.0", Severity: "medium"},
					{ID: "CVE-4", Package: "bash", Version: "1.0", Severity: "low"},
				},
			},
		},
		{
			name: "scanned, unrated findings never count",
			in: scan.Outcome{Status: scan.StatusScanned, Report: report(
				finding("DEBIAN-CVE-1", "perl", osv.Unknown, 0, ""),
				finding("CVE-4", "bash", osv.Low, 2, ""),
			), Gate: &scan.GateOutcome{Name: "lax", Mode: "enforce", MaxSeverity: "critical", UnknownSeverity: "unknown",
				Result: scan.GateResult{Pass: true}}},
			want: &ScanSummary{Status: "scanned", Database: db,
				Counts: &SeverityCounts{Low: 1, Unknown: 1}, WorstSeverity: "low",
				Policy: &ScanPolicyResult{Name: "lax", Mode: "enforce", Passed: true, MaxSeverity: "critical", UnknownSeverity: "unknown"},
				Findings: []ScanFinding{
					{ID: "CVE-4", Package: "bash", Version: "1.0", Severity: "low"},
					{ID: "DEBIAN-CVE-1", Package: "perl", Version: "1.0", Severity: "unknown"},
				},
			},
		},
		{
			name: "scanned clean, no policy",
			in:   scan.Outcome{Status: scan.StatusScanned, Report: report()},
			want: &ScanSummary{Status: "scanned", Database: db, Counts: &SeverityCounts{}, WorstSeverity: "none"},
		},
		{
			name: "scanned, only unrated findings",
			in:   scan.Outcome{Status: scan.StatusScanned, Report: report(finding("DEBIAN-CVE-1", "perl", osv.Unknown, 0, ""))},
			want: &ScanSummary{Status: "scanned", Database: db, Counts: &SeverityCounts{Unknown: 1}, WorstSeverity: "unknown",
				Findings: []ScanFinding{{ID: "DEBIAN-CVE-1", Package: "perl", Version: "1.0", Severity: "unknown"}}},
		},
		{
			name: "pending",
			in:   scan.Outcome{Status: scan.StatusPending, Reason: "awaiting a vulnerability scan"},
			want: &ScanSummary{Status: "pending", Reason: "awaiting a vulnerability scan"},
		},
		{
			name: "failed",
			in:   scan.Outcome{Status: scan.StatusFailed, Reason: "scan failed: gzip: invalid header\nat layer 2"},
			want: &ScanSummary{Status: "failed", Reason: "scan failed: gzip: invalid header at layer 2"},
		},
		{
			name: "not scanned",
			in:   scan.Outcome{Status: scan.StatusNotScanned, Reason: "no vulnerability database has been imported"},
			want: &ScanSummary{Status: "not-scanned", Reason: "no vulnerability database has been imported"},
		},
		{
			name: "scanned without a report",
			in:   scan.Outcome{Status: scan.StatusScanned},
			want: &ScanSummary{Status: "pending", Reason: "no scan report"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, summarize(tt.in)); diff != "" {
				t.Errorf("summarize (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSummarizeKeepsTheWorst: the summary lists 20 findings, the worst,
// and counts them all.
func TestSummarizeKeepsTheWorst(t *testing.T) {
	t.Parallel()
	var findings []scan.Finding
	for i := range 30 {
		findings = append(findings, finding(fmt.Sprintf("CVE-LOW-%02d", i), "pkg", osv.Low, 1, ""))
	}
	for i := range 5 {
		findings = append(findings, finding(fmt.Sprintf("CVE-CRIT-%02d", i), "pkg", osv.Critical, 9, "2.0"))
	}
	s := summarize(scan.Outcome{Status: scan.StatusScanned, Report: report(findings...)})
	if len(s.Findings) != reviewFindings {
		t.Fatalf("%d findings listed, want %d", len(s.Findings), reviewFindings)
	}
	for i, f := range s.Findings {
		want := "critical"
		if i >= 5 {
			want = "low"
		}
		if f.Severity != want {
			t.Errorf("findings[%d] is %s %s: the criticals come first", i, f.ID, f.Severity)
		}
	}
	if s.Counts.Critical != 5 || s.Counts.Low != 30 {
		t.Errorf("counts %+v, want 5 critical and 30 low", *s.Counts)
	}
}

// reviewFindings is how many findings a review lists, as the README says.
const reviewFindings = 20
