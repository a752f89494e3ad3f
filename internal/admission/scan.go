package admission

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
)

// maxReviewFindings is how many findings, worst first, a review's scan
// summary lists; its counts cover them all.
const maxReviewFindings = 20

// ScanSummary is the scan object of a Review: what is known of the image's
// vulnerability scan when the tag is pushed. Severities are lower-case:
// critical, high, medium, low, unknown.
type ScanSummary struct {
	// Status is scanned, pending, failed or not-scanned.
	Status string `json:"status"`
	// Reason says why the image is pending, failed or not scanned.
	Reason string `json:"reason,omitempty"`
	// Database identifies the vulnerability database of the report.
	Database *ScanDatabase `json:"database,omitempty"`
	// Counts are the findings by severity; set when scanned.
	Counts *SeverityCounts `json:"counts,omitempty"`
	// WorstSeverity is the highest rated severity of a finding, unknown
	// when every finding is unrated, none without findings; set when
	// scanned.
	WorstSeverity string `json:"worstSeverity,omitempty"`
	// Policy is the repository's scan policy and its result; set when
	// scanned and a policy applies.
	Policy *ScanPolicyResult `json:"policy,omitempty"`
	// Findings are the worst findings, at most 20; absent when none.
	Findings []ScanFinding `json:"findings,omitempty"`
	// Unchecked are the packages no record could match, grouped by ecosystem
	// and type (see scan.Report); absent when every package was checked.
	Unchecked []scan.Unchecked `json:"unchecked,omitempty"`
}

// ScanDatabase identifies a vulnerability database.
type ScanDatabase struct {
	// Digest identifies the database's contents.
	Digest string `json:"digest"`
	// Modified is the newest record's modification time.
	Modified time.Time `json:"modified,omitzero"`
}

// SeverityCounts counts findings by their rated severity.
type SeverityCounts struct {
	Critical int `json:"critical"`
	High     int `json:"high"`
	Medium   int `json:"medium"`
	Low      int `json:"low"`
	Unknown  int `json:"unknown"`
}

// ScanPolicyResult is a scan policy's judgement of the report.
type ScanPolicyResult struct {
	Name string `json:"name"`
	// Mode is enforce, quarantine or audit.
	Mode string `json:"mode"`
	// Passed is true when no finding violates the policy.
	Passed bool `json:"passed"`
	// MaxSeverity is the highest severity that passes (none ... critical).
	MaxSeverity string `json:"maxSeverity"`
	// UnknownSeverity is what an unrated finding counts as.
	UnknownSeverity string `json:"unknownSeverity"`
	// Violations counts the findings that fail the policy.
	Violations int `json:"violations"`
}

// ScanFinding is one finding of a ScanSummary.
type ScanFinding struct {
	ID           string `json:"id"`
	Package      string `json:"package"`
	Version      string `json:"version"`
	FixedVersion string `json:"fixedVersion,omitempty"`
	Severity     string `json:"severity"`
}

// summarize makes the review's scan object of an outcome.
func summarize(o scan.Outcome) *ScanSummary {
	s := &ScanSummary{Status: o.Status, Reason: oneLine(o.Reason)}
	if o.Status != scan.StatusScanned || o.Report == nil {
		if s.Status == scan.StatusScanned {
			s.Status, s.Reason = scan.StatusPending, "no scan report"
		}
		return s
	}
	s.Reason = ""
	r := o.Report
	s.Database = &ScanDatabase{Digest: r.DB.Digest, Modified: r.DB.Modified.UTC()}
	s.Counts = &SeverityCounts{}
	worst := -1
	for _, f := range r.Findings {
		switch f.Severity.Level {
		case osv.Critical:
			s.Counts.Critical++
		case osv.High:
			s.Counts.High++
		case osv.Medium:
			s.Counts.Medium++
		case osv.Low:
			s.Counts.Low++
		default:
			s.Counts.Unknown++
		}
		worst = max(worst, f.Severity.Level.Rank(), 0)
	}
	s.WorstSeverity = "none"
	if worst >= 0 {
		s.WorstSeverity = severityName(worst)
	}
	unknownAs := osv.Critical // as a gate without unknownSeverity counts them
	if g := o.Gate; g != nil {
		s.Policy = &ScanPolicyResult{Name: g.Name, Mode: g.Mode, Passed: g.Result.Pass, MaxSeverity: g.MaxSeverity,
			UnknownSeverity: g.UnknownSeverity, Violations: len(g.Result.Violations)}
		if l, ok := osv.ParseLevel(g.UnknownSeverity); ok {
			unknownAs = l
		}
	}
	s.Findings = worstFindings(r.Findings, unknownAs, maxReviewFindings)
	s.Unchecked = r.Unchecked
	return s
}

// worstFindings returns the n worst findings: by severity, an unrated one
// counting as unknownAs (as the gate counts it), then a rated one before
// an unrated one, then by CVSS score.
func worstFindings(findings []scan.Finding, unknownAs osv.Level, n int) []ScanFinding {
	rank := func(f scan.Finding) int { return max(f.Severity.Level.Rank(), 0) }
	effective := func(f scan.Finding) int {
		if rank(f) == 0 {
			return unknownAs.Rank()
		}
		return rank(f)
	}
	sorted := slices.Clone(findings)
	slices.SortStableFunc(sorted, func(a, b scan.Finding) int {
		return cmp.Or(
			cmp.Compare(effective(b), effective(a)),
			cmp.Compare(rank(b), rank(a)),
			cmp.Compare(b.Severity.Score, a.Severity.Score),
			strings.Compare(a.ID, b.ID),
			strings.Compare(a.Package, b.Package),
			strings.Compare(a.Version, b.Version),
		)
	})
	var out []ScanFinding
	for _, f := range sorted[:min(n, len(sorted))] {
		out = append(out, ScanFinding{ID: f.ID, Package: f.Package, Version: f.Version, FixedVersion: f.FixedVersion,
			Severity: severityName(rank(f))})
	}
	return out
}

// severityName is the lower-case name of a level's rank.
func severityName(rank int) string {
	for _, l := range []osv.Level{osv.Low, osv.Medium, osv.High, osv.Critical} {
		if l.Rank() == rank {
			return strings.ToLower(string(l))
		}
	}
	return "unknown"
}
