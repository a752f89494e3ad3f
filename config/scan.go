package config

import (
	"fmt"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// Scan configures what scan results mean per repository.
type Scan struct {
	// Policies apply to repositories matching their patterns; the first
	// match applies. No policy: scans are recorded and served only.
	Policies []ScanPolicy `yaml:"policies"`
}

// ScanPolicy is a vulnerability gate for matching repositories.
type ScanPolicy struct {
	Name string `yaml:"name"`
	// Repositories are patterns as in auth rules (team/**).
	Repositories []string `yaml:"repositories"`
	// Mode is enforce (a tag push is scanned at once and refused when the
	// gate fails), quarantine (pulls withheld until a passing scan) or audit
	// (default: recorded only).
	Mode string `yaml:"mode"`
	// MaxSeverity is the highest severity that passes: none, low, medium,
	// high (default) or critical.
	MaxSeverity string `yaml:"maxSeverity"`
	// UnknownSeverity is what an unrated finding counts as: low, medium,
	// high, critical (default) or unknown (never counts).
	UnknownSeverity string `yaml:"unknownSeverity"`
	// IgnoreUnfixed lets findings without a fixed version pass.
	IgnoreUnfixed bool `yaml:"ignoreUnfixed"`
	// FailOnUnchecked fails an image some of whose packages no record could
	// check (the database has no records for their distribution or release).
	FailOnUnchecked bool `yaml:"failOnUnchecked"`
	// Allowlist lets listed vulnerabilities pass until they expire.
	Allowlist []ScanAllow `yaml:"allowlist"`
	// Timeout bounds the scan at an enforce tag push (default 60s); a scan
	// after a push gets this or 10 minutes, whichever is longer.
	Timeout Duration `yaml:"timeout"`
}

// ScanAllow accepts one vulnerability.
type ScanAllow struct {
	// ID is the vulnerability id or an alias (CVE-2024-1234).
	ID string `yaml:"id"`
	// Package limits the entry to one package (or source package).
	Package string `yaml:"package"`
	// Expires is a day (2026-12-31, through its end in UTC) or an RFC 3339
	// time; empty never expires.
	Expires string `yaml:"expires"`
	// Reason is recorded, not interpreted.
	Reason string `yaml:"reason"`
}

// Provision fills defaults.
func (s *Scan) Provision() {
	for i := range s.Policies {
		p := &s.Policies[i]
		if p.Name == "" {
			p.Name = fmt.Sprintf("policies[%d]", i)
		}
		if p.Mode == "" {
			p.Mode = string(policy.ModeAudit)
		}
		if p.Timeout == 0 {
			p.Timeout = Duration(60 * time.Second)
		}
	}
}

func (s *Scan) validate(bad func(key, format string, args ...any)) {
	levels := map[string]bool{"": true, "none": true, "low": true, "medium": true, "high": true, "critical": true}
	for i, p := range s.Policies {
		key := fmt.Sprintf("scan.policies[%d]", i)
		checkMode(bad, key+".mode", p.Mode)
		if len(p.Repositories) == 0 {
			bad(key+".repositories", "required")
		}
		checkPatterns(bad, key+".repositories", p.Repositories)
		if !levels[p.MaxSeverity] {
			bad(key+".maxSeverity", "must be none, low, medium, high or critical, got %q", p.MaxSeverity)
		}
		if p.UnknownSeverity != "" && p.UnknownSeverity != "unknown" && (!levels[p.UnknownSeverity] || p.UnknownSeverity == "none") {
			bad(key+".unknownSeverity", "must be low, medium, high, critical or unknown, got %q", p.UnknownSeverity)
		}
		for j, a := range p.Allowlist {
			akey := fmt.Sprintf("%s.allowlist[%d]", key, j)
			if a.ID == "" {
				bad(akey+".id", "required")
			}
			if a.Expires != "" {
				if _, err := time.Parse("2006-01-02", a.Expires); err != nil {
					if _, err := time.Parse(time.RFC3339, a.Expires); err != nil {
						bad(akey+".expires", "must be a day like 2026-12-31 or an RFC 3339 time")
					}
				}
			}
		}
	}
}
