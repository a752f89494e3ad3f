package scan

import (
	"slices"

	"github.com/portcullis/portcullis/scan/vulndb"
)

// Change says how a re-matched report differs from the previous one.
type Change struct {
	// Verdict is true when Policy.Failed differs, or there was no previous report.
	Verdict bool
	// Findings is true when any finding was added, removed or changed (severity, fixed
	// version, summary, aliases, locations), or there was no previous report.
	Findings bool
	// Coverage is true when the packages the database could not check (Report.Unchecked)
	// differ: an archive was added to or dropped from the bundle.
	Coverage bool
	// Added and Removed are the findings present in only one of the two reports, by
	// (ecosystem, package, version, id), in Match order.
	Added, Removed []Finding
}

// Changed reports whether the verdict, any finding or the coverage changed.
func (c Change) Changed() bool { return c.Verdict || c.Findings || c.Coverage }

// Rematch recomputes an image's report against db from its stored inventory, without
// reading any layer, and compares it with prev, the image's last report (nil when there is
// none). A report whose Change is not Changed() differs from prev only in its DB
// identity. Callers gating with a GatePolicy compare the two reports' GateResult.Pass
// instead of Change.Verdict, which is about policy.
func Rematch(stored *StoredInventory, prev *Report, db *vulndb.DB, policy Policy) (*Report, Change) {
	return diffReports(stored.Report(db, policy), prev)
}

func diffReports(r, prev *Report) (*Report, Change) {
	if prev == nil {
		return r, Change{Verdict: true, Findings: true, Added: slices.Clone(r.Findings)}
	}
	var c Change
	c.Verdict = prev.Policy.failed() != r.Policy.failed()
	c.Coverage = !slices.EqualFunc(prev.Unchecked, r.Unchecked, func(a, b Unchecked) bool {
		return a.Ecosystem == b.Ecosystem && a.Type == b.Type && a.Packages == b.Packages // not the reason's wording
	})
	old, cur := prev.Findings, r.Findings
	if !slices.IsSortedFunc(old, compareFindings) {
		old = slices.Clone(old)
		slices.SortFunc(old, compareFindings)
	}
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(old) && compareFindings(old[i], cur[j]) < 0):
			c.Removed = append(c.Removed, old[i])
			i++
		case i == len(old) || compareFindings(old[i], cur[j]) > 0:
			c.Added = append(c.Added, cur[j])
			j++
		default:
			if !sameFinding(old[i], cur[j]) {
				c.Findings = true
			}
			i++
			j++
		}
	}
	if len(c.Added) > 0 || len(c.Removed) > 0 {
		c.Findings = true
	}
	return r, c
}

func sameFinding(a, b Finding) bool {
	return a.ID == b.ID && a.Ecosystem == b.Ecosystem && a.Package == b.Package && a.Version == b.Version &&
		a.SourcePackage == b.SourcePackage && a.SourceVersion == b.SourceVersion &&
		a.FixedVersion == b.FixedVersion && a.Severity == b.Severity && a.Summary == b.Summary &&
		slices.Equal(a.Aliases, b.Aliases) && slices.Equal(a.Locations, b.Locations)
}

// failed reports whether a threshold was given and failed.
func (p *PolicyResult) failed() bool { return p != nil && p.Failed }
