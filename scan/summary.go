package scan

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/scan/osv"
)

// maxSummaryFindings is how many findings, worst first, a Summary lists;
// its counts cover them all.
const maxSummaryFindings = 20

// Summary is what is known of an image's vulnerability scan, in brief: the
// scan object of an admission review and of the management API's listings. Severities are lower-case:
// critical, high, medium, low, unknown.
type Summary struct {
	// Status is scanned, pending, failed or not-scanned.
	Status string `json:"status"`
	// Reason says why the image is pending, failed or not scanned.
	Reason string `json:"reason,omitempty"`
	// Database identifies the vulnerability database of the report.
	Database *SummaryDatabase `json:"database,omitempty"`
	// Counts are the findings by severity; set when scanned.
	Counts *SeverityCounts `json:"counts,omitempty"`
	// WorstSeverity is the highest rated severity of a finding, unknown
	// when every finding is unrated, none without findings; set when
	// scanned.
	WorstSeverity string `json:"worstSeverity,omitempty"`
	// Policy is the repository's scan policy and its result; set when
	// scanned and a policy applies.
	Policy *GateSummary `json:"policy,omitempty"`
	// Findings are the worst findings, at most 20; absent when none.
	Findings []SummaryFinding `json:"findings,omitempty"`
	// Unchecked are the packages no record could match, grouped by ecosystem
	// and type (see scan.Report); absent when every package was checked.
	Unchecked []Unchecked `json:"unchecked,omitempty"`
}

// SummaryDatabase identifies a vulnerability database.
type SummaryDatabase struct {
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

// GateSummary is a scan policy's judgement of a report, as a report stored
// by the registry (Report.RepositoryPolicy), an admission review and the
// management API carry it.
type GateSummary struct {
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

// SummaryFinding is one finding of a Summary.
type SummaryFinding struct {
	ID           string `json:"id"`
	Package      string `json:"package"`
	Version      string `json:"version"`
	FixedVersion string `json:"fixedVersion,omitempty"`
	Severity     string `json:"severity"`
}

// Summarize makes the Summary of an outcome.
func Summarize(o Outcome) *Summary {
	s := &Summary{Status: o.Status, Reason: oneLine(o.Reason)}
	if o.Status != StatusScanned || o.Report == nil {
		if s.Status == StatusScanned {
			s.Status, s.Reason = StatusPending, "no scan report"
		}
		return s
	}
	s.Reason = ""
	r := o.Report
	s.Database = &SummaryDatabase{Digest: r.DB.Digest, Modified: r.DB.Modified.UTC()}
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
		s.Policy = g.Summary()
		if l, ok := osv.ParseLevel(g.UnknownSeverity); ok {
			unknownAs = l
		}
	}
	s.Findings = worstFindings(r.Findings, unknownAs, maxSummaryFindings)
	s.Unchecked = r.Unchecked
	return s
}

// worstFindings returns the n worst findings: by severity, an unrated one
// counting as unknownAs (as the gate counts it), then a rated one before
// an unrated one, then by CVSS score.
func worstFindings(findings []Finding, unknownAs osv.Level, n int) []SummaryFinding {
	rank := func(f Finding) int { return max(f.Severity.Level.Rank(), 0) }
	effective := func(f Finding) int {
		if rank(f) == 0 {
			return unknownAs.Rank()
		}
		return rank(f)
	}
	sorted := slices.Clone(findings)
	slices.SortStableFunc(sorted, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(effective(b), effective(a)),
			cmp.Compare(rank(b), rank(a)),
			cmp.Compare(b.Severity.Score, a.Severity.Score),
			strings.Compare(a.ID, b.ID),
			strings.Compare(a.Package, b.Package),
			strings.Compare(a.Version, b.Version),
		)
	})
	var out []SummaryFinding
	for _, f := range sorted[:min(n, len(sorted))] {
		out = append(out, SummaryFinding{ID: f.ID, Package: f.Package, Version: f.Version, FixedVersion: f.FixedVersion,
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

// Summary returns the judgement in brief.
func (o *GateOutcome) Summary() *GateSummary {
	return &GateSummary{Name: o.Name, Mode: o.Mode, Passed: o.Result.Pass, MaxSeverity: o.MaxSeverity,
		UnknownSeverity: o.UnknownSeverity, Violations: len(o.Result.Violations)}
}

// Reaches reports whether the image has a finding at or above level l: a
// rated one by its severity, an unrated one as the repository's scan policy
// counts it (as critical without a policy; never with unknownSeverity
// unknown). An image that is not scanned reaches no level.
func (s *Summary) Reaches(l osv.Level) bool {
	if s == nil || s.Counts == nil {
		return false
	}
	if r, ok := osv.ParseLevel(s.WorstSeverity); ok && r != osv.Unknown && r.Rank() >= l.Rank() {
		return true
	}
	if s.Counts.Unknown == 0 {
		return false
	}
	unknownAs := osv.Critical
	if s.Policy != nil {
		if u, ok := osv.ParseLevel(s.Policy.UnknownSeverity); ok {
			unknownAs = u
		}
	}
	return unknownAs != osv.Unknown && unknownAs.Rank() >= l.Rank()
}

// oneLine makes s fit one bounded line.
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
