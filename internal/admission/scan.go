package admission

import "github.com/portcullis/portcullis/scan"

// The scan object of a Review is scan.Summary: what is known of the image's
// vulnerability scan when the tag is pushed.
type (
	ScanSummary      = scan.Summary
	ScanDatabase     = scan.SummaryDatabase
	SeverityCounts   = scan.SeverityCounts
	ScanPolicyResult = scan.GateSummary
	ScanFinding      = scan.SummaryFinding
)

// summarize makes the review's scan object of an outcome.
func summarize(o scan.Outcome) *ScanSummary { return scan.Summarize(o) }
