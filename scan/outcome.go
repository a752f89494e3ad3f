package scan

import (
	"fmt"
	"strings"
	"time"
)

// Scan statuses of an Outcome.
const (
	// StatusScanned is an image with a scan report.
	StatusScanned = "scanned"
	// StatusPending is an image that is to be scanned and has no result yet.
	StatusPending = "pending"
	// StatusFailed is an image that could not be scanned: a corrupt layer,
	// a scan over its time limit.
	StatusFailed = "failed"
	// StatusNotScanned is a manifest that is not scanned: no vulnerability
	// database is loaded, or it is not a container image.
	StatusNotScanned = "not-scanned"
)

// Outcome is what is known of an image's vulnerability scan when a tag is
// pushed.
type Outcome struct {
	// Status is StatusScanned, StatusPending, StatusFailed or
	// StatusNotScanned.
	Status string
	// Reason says, in one line, why an image is not scanned (yet); empty
	// when it is scanned.
	Reason string
	// Report is the scan report; set when Status is StatusScanned.
	Report *Report
	// Gate is the repository's scan policy and its judgement of Report;
	// nil when no policy applies or there is no report.
	Gate *GateOutcome
	// Exempt marks a manifest that is not a container image (an index, an
	// artifact): its images are gated when tagged, it is not, so Admits
	// lets it through.
	Exempt bool
}

// GateOutcome is a scan policy's judgement of a report.
type GateOutcome struct {
	// Name and Mode are the policy's (scan.policies[].name, .mode).
	Name, Mode string
	// MaxSeverity is the highest severity that passes: none, low, medium,
	// high or critical.
	MaxSeverity string
	// UnknownSeverity is what an unrated finding counts as: low, medium,
	// high, critical or unknown (never counts).
	UnknownSeverity string
	// Result is the policy applied to the report.
	Result GateResult
}

// Admits reports whether an enforce gate lets the outcome through, and
// the reason for a refusal: a scanned image passes its policy (or has
// none), a manifest that is not an image is not gated, and everything else
// (pending, failed, no database) is refused.
func (o Outcome) Admits() (bool, string) {
	switch {
	case o.Status == StatusScanned && o.Gate != nil:
		return o.Gate.Result.Pass, fmt.Sprintf("vulnerability policy %q: %s", o.Gate.Name, o.Gate.Result.Reason)
	case o.Status == StatusScanned, o.Exempt:
		return true, ""
	case o.Reason == "":
		return false, "awaiting a vulnerability scan"
	default:
		return false, o.Reason
	}
}

// RepoGate is a scan policy as it applies to the repositories it names:
// its name and mode (enforce, quarantine, audit), its gate, and the time
// a scan at a tag push is given (zero: the scanner's default).
type RepoGate struct {
	Name    string
	Mode    string
	Gate    GatePolicy
	Timeout time.Duration
}

// Judge is the outcome of report under the gate at now.
func (g *RepoGate) Judge(report *Report, now time.Time) *GateOutcome {
	o := &GateOutcome{Name: g.Name, Mode: g.Mode, MaxSeverity: strings.ToLower(g.Gate.MaxSeverity),
		UnknownSeverity: strings.ToLower(g.Gate.UnknownSeverity), Result: g.Gate.Evaluate(report, now)}
	if o.MaxSeverity == "" {
		o.MaxSeverity = "high"
	}
	if o.UnknownSeverity == "" {
		o.UnknownSeverity = "critical"
	}
	return o
}
