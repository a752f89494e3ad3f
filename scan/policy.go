package scan

import (
	"fmt"

	"github.com/portcullis/portcullis/scan/osv"
)

// Policy says which findings make a scan fail. The zero value never fails.
type Policy struct {
	// FailOn is the lowest severity that fails the scan; "" never fails.
	FailOn osv.Level `json:"failOn,omitempty"`
	// UnknownAs is the severity a finding of UNKNOWN severity counts as: "" means CRITICAL
	// (an unrated vulnerability fails any threshold), osv.Unknown means it never counts.
	UnknownAs osv.Level `json:"unknownAs,omitempty"`
}

// Validate checks that both levels are known.
func (p Policy) Validate() error {
	if p.FailOn != "" && (p.FailOn.Rank() < 1) {
		return fmt.Errorf("fail-on: unknown severity %q (want low, medium, high or critical)", p.FailOn)
	}
	if p.UnknownAs != "" && p.UnknownAs.Rank() < 0 {
		return fmt.Errorf("unknown severity: unknown level %q (want low, medium, high, critical or unknown)", p.UnknownAs)
	}
	return nil
}

// Violations counts the findings at or above FailOn.
func (p Policy) Violations(findings []Finding) int {
	if p.FailOn == "" {
		return 0
	}
	n := 0
	for _, f := range findings {
		l := f.Severity.Level
		if l == osv.Unknown {
			l = p.UnknownAs
			if l == "" {
				l = osv.Critical
			}
			if l == osv.Unknown {
				continue
			}
		}
		if l.Rank() >= p.FailOn.Rank() {
			n++
		}
	}
	return n
}
