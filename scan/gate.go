package scan

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/scan/osv"
)

// GatePolicy decides whether an image's scan report lets it through admission (a tag push
// in enforce mode, a pull out of quarantine). The zero value denies findings above HIGH,
// counting findings of unknown severity as CRITICAL: most OS and Go records carry no
// severity, so a gate that must let such images through says so with UnknownSeverity.
type GatePolicy struct {
	// MaxSeverity is the highest severity a finding may have and pass: none (no finding
	// passes), low, medium, high, critical (every finding passes). "" means high.
	MaxSeverity string `json:"maxSeverity,omitempty"`
	// UnknownSeverity is what a finding of UNKNOWN severity counts as: low, medium, high,
	// critical, or unknown to let it pass whatever MaxSeverity says. "" means critical.
	UnknownSeverity string `json:"unknownSeverity,omitempty"`
	// IgnoreUnfixed lets findings without a known fixed version pass.
	IgnoreUnfixed bool `json:"ignoreUnfixed,omitempty"`
	// FailOnUnchecked fails a report that lists packages no record could check
	// (Report.Unchecked): an image whose distribution the database does not cover does not
	// pass for having no findings.
	FailOnUnchecked bool `json:"failOnUnchecked,omitempty"`
	// Allowlist lists vulnerabilities that pass whatever their severity, until they expire.
	Allowlist []AllowEntry `json:"allowlist,omitempty"`
}

// AllowEntry lets one vulnerability through a GatePolicy.
type AllowEntry struct {
	// ID is the finding's id or one of its aliases (CVE-2024-1234, GHSA-..., GO-2024-...),
	// compared case-insensitively.
	ID string `json:"id"`
	// Package, when set, limits the entry to findings in that package, by its name or its
	// source package's name.
	Package string `json:"package,omitempty"`
	// Expires is when the entry stops applying; zero never expires.
	Expires Date `json:"expires,omitzero"`
	// Reason says why the vulnerability is accepted; it is not interpreted.
	Reason string `json:"reason,omitempty"`
}

// ErrGatePolicy is returned (wrapped, with every problem and its key) by
// GatePolicy.Validate.
var ErrGatePolicy = errors.New("invalid scan gate policy")

// Validate checks the severities and the allowlist entries, returning every problem at once,
// each with its key (maxSeverity, allowlist[2].id), wrapping ErrGatePolicy.
func (p GatePolicy) Validate() error {
	var problems []string
	if _, ok := parseMax(p.MaxSeverity); !ok {
		problems = append(problems, fmt.Sprintf("maxSeverity: %q: want none, low, medium, high or critical", p.MaxSeverity))
	}
	if _, ok := parseUnknownAs(p.UnknownSeverity); !ok {
		problems = append(problems, fmt.Sprintf("unknownSeverity: %q: want low, medium, high, critical or unknown", p.UnknownSeverity))
	}
	seen := map[string]int{}
	for i, e := range p.Allowlist {
		key := fmt.Sprintf("allowlist[%d]", i)
		id := strings.ToUpper(strings.TrimSpace(e.ID))
		if id == "" {
			problems = append(problems, key+".id: required")
			continue
		}
		k := id + "\x00" + e.Package
		if j, dup := seen[k]; dup {
			problems = append(problems, fmt.Sprintf("%s.id: %s repeats allowlist[%d]", key, e.ID, j))
		}
		seen[k] = i
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrGatePolicy, strings.Join(problems, "; "))
	}
	return nil
}

// parseMax reads MaxSeverity; none is rank 0, so that every finding (rank ≥ 1) is above it.
func parseMax(s string) (int, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return osv.High.Rank(), true
	case "none":
		return 0, true
	}
	l, ok := osv.ParseLevel(s)
	if !ok || l == osv.Unknown {
		return 0, false
	}
	return l.Rank(), true
}

func parseUnknownAs(s string) (osv.Level, bool) {
	if strings.TrimSpace(s) == "" {
		return osv.Critical, true
	}
	return osv.ParseLevel(s)
}

// GateResult is the outcome of GatePolicy.Evaluate.
type GateResult struct {
	// Pass is true when no finding violates the policy.
	Pass bool
	// Reason says why, in one line fit for a 403 message: the worst violations (at most
	// three, by id, severity, package, version and fixed version), their count, and any
	// expired allowlist entries that would have let them through.
	Reason string
	// Violations are the findings that fail the policy, worst first.
	Violations []Finding
	// Unchecked are the report's unchecked packages when FailOnUnchecked fails it for them.
	Unchecked []Unchecked
	// Allowed are the findings above MaxSeverity let through by the allowlist.
	Allowed []Finding
	// Expired are allowlist entries that matched a violation but had expired.
	Expired []AllowEntry
}

// maxReasonFindings is how many violations Reason names.
const maxReasonFindings = 3

// Evaluate applies the policy to a report at time now (an entry whose Expires is at or
// before now no longer applies). A nil report, or a policy that fails Validate, fails.
func (p GatePolicy) Evaluate(r *Report, now time.Time) GateResult {
	if err := p.Validate(); err != nil {
		return GateResult{Reason: err.Error()}
	}
	if r == nil {
		return GateResult{Reason: "no scan report"}
	}
	maxRank, _ := parseMax(p.MaxSeverity)
	unknownAs, _ := parseUnknownAs(p.UnknownSeverity)
	s := severities{maxRank: maxRank, unknownAs: unknownAs}
	res := p.judge(r.Findings, s, now)
	if p.FailOnUnchecked {
		res.Unchecked = r.Unchecked
	}
	res.Pass = len(res.Violations) == 0 && len(res.Unchecked) == 0
	res.Reason = reason(res, s)
	return res
}

// severities is how a policy ranks findings: the highest rank that passes
// and what an unrated finding counts as.
type severities struct {
	maxRank   int
	unknownAs osv.Level
}

// effective returns the level a finding counts as.
func (s severities) effective(f Finding) osv.Level {
	if f.Severity.Level.Rank() <= 0 { // UNKNOWN, or not a level at all
		return s.unknownAs
	}
	return f.Severity.Level
}

// maxName names the highest level that passes, for reasons.
func (s severities) maxName() string {
	name := "HIGH"
	for _, l := range []osv.Level{osv.Low, osv.Medium, osv.High, osv.Critical} {
		if l.Rank() == s.maxRank {
			name = string(l)
		}
	}
	return name
}

// judge sorts the findings above the highest passing severity into allowed
// and violations (most severe first), and lists the allowlist entries that
// would have allowed one but expired.
func (p GatePolicy) judge(findings []Finding, s severities, now time.Time) GateResult {
	var res GateResult
	expired := map[int]bool{}
	for _, f := range findings {
		l := s.effective(f)
		if l == osv.Unknown || l.Rank() <= s.maxRank {
			continue
		}
		if p.IgnoreUnfixed && f.FixedVersion == "" {
			continue
		}
		if p.allows(f, now, expired) {
			res.Allowed = append(res.Allowed, f)
		} else {
			res.Violations = append(res.Violations, f)
		}
	}
	for i, e := range p.Allowlist {
		if expired[i] {
			res.Expired = append(res.Expired, e)
		}
	}
	slices.SortStableFunc(res.Violations, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(s.effective(b).Rank(), s.effective(a).Rank()),
			cmp.Compare(b.Severity.Score, a.Severity.Score),
			compareFindings(a, b),
		)
	})
	return res
}

// allows reports whether an allowlist entry that has not expired at now
// allows f; it marks in expired the matching entries it passed over.
func (p GatePolicy) allows(f Finding, now time.Time, expired map[int]bool) bool {
	for i, e := range p.Allowlist {
		if !e.matches(f) {
			continue
		}
		if e.Expires.IsZero() || now.Before(e.Expires.Time) {
			return true
		}
		expired[i] = true
	}
	return false
}

// reason says in one line why res passed or failed: the outcome, the
// violations (at most maxReasonFindings), the packages not checked, the
// allowlisted findings and the expired allowlist entries.
func reason(res GateResult, s severities) string {
	var b strings.Builder
	writeOutcome(&b, res, s)
	writeViolations(&b, res.Violations, s.unknownAs)
	if n := uncheckedPackages(res.Unchecked); n > 0 && len(res.Violations) > 0 {
		fmt.Fprintf(&b, "; and %s not checked", plural(n, "package"))
	}
	if res.Pass && len(res.Allowed) > 0 {
		fmt.Fprintf(&b, " (%s allowlisted)", plural(len(res.Allowed), "finding"))
	}
	for _, e := range res.Expired {
		fmt.Fprintf(&b, "; allowlist entry %s expired %s", e.ID, e.Expires)
	}
	return b.String()
}

// writeOutcome writes whether the policy passed and, when it failed only
// for packages not checked, which.
func writeOutcome(b *strings.Builder, res GateResult, s severities) {
	switch {
	case len(res.Violations) == 0 && len(res.Unchecked) > 0:
		b.WriteString("scan policy failed: packages not checked: ")
		for i, u := range res.Unchecked {
			if i > 0 {
				b.WriteString("; ")
			}
			noun := "packages"
			if u.Packages == 1 {
				noun = "package"
			}
			fmt.Fprintf(b, "%d %s %s (%s): %s", u.Packages, u.Type, noun, dash(u.Ecosystem), u.Reason)
		}
	case res.Pass && s.maxRank == 0:
		b.WriteString("scan policy passed: no finding")
	case res.Pass:
		fmt.Fprintf(b, "scan policy passed: no finding above %s", s.maxName())
	case s.maxRank == 0:
		fmt.Fprintf(b, "scan policy failed: %s (none allowed): ", plural(len(res.Violations), "finding"))
	default:
		fmt.Fprintf(b, "scan policy failed: %s above %s: ", plural(len(res.Violations), "finding"), s.maxName())
	}
}

// writeViolations lists the first maxReasonFindings violations, each with
// its CVE alias, severity, package and fix.
func writeViolations(b *strings.Builder, violations []Finding, unknownAs osv.Level) {
	for i, f := range violations {
		if i == maxReasonFindings {
			fmt.Fprintf(b, "; and %d more", len(violations)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.ID)
		if cve := firstCVE(f); cve != "" && cve != f.ID {
			fmt.Fprintf(b, " (%s)", cve)
		}
		fmt.Fprintf(b, " %s", f.Severity.Level)
		if f.Severity.Level.Rank() <= 0 {
			fmt.Fprintf(b, " (counted as %s)", unknownAs)
		}
		fmt.Fprintf(b, " in %s %s", f.Package, f.Version)
		if f.FixedVersion != "" {
			fmt.Fprintf(b, ", fixed in %s", f.FixedVersion)
		} else {
			b.WriteString(", no fix known")
		}
	}
}

func uncheckedPackages(us []Unchecked) int {
	n := 0
	for _, u := range us {
		n += u.Packages
	}
	return n
}

func (e AllowEntry) matches(f Finding) bool {
	if e.Package != "" && e.Package != f.Package && e.Package != f.SourcePackage {
		return false
	}
	id := strings.TrimSpace(e.ID)
	if strings.EqualFold(id, f.ID) {
		return true
	}
	for _, a := range f.Aliases {
		if strings.EqualFold(id, a) {
			return true
		}
	}
	return false
}

func firstCVE(f Finding) string {
	if strings.HasPrefix(f.ID, "CVE-") {
		return f.ID
	}
	for _, a := range f.Aliases {
		if strings.HasPrefix(a, "CVE-") {
			return a
		}
	}
	return ""
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// Date is an instant written in YAML or JSON as a day ("2026-12-31", meaning the end of that
// day in UTC: the entry applies through the whole day) or an RFC 3339 time.
type Date struct{ time.Time }

// UnmarshalText reads a day or an RFC 3339 time.
func (d *Date) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		d.Time = time.Time{}
		return nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		d.Time = t.AddDate(0, 0, 1)
		return nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("date %q: want YYYY-MM-DD or an RFC 3339 time", s)
	}
	d.Time = t
	return nil
}

// MarshalText writes the day when the instant is the end of a day in UTC, else RFC 3339.
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// String is the text MarshalText writes.
func (d Date) String() string {
	if d.IsZero() {
		return ""
	}
	u := d.UTC()
	if u.Hour() == 0 && u.Minute() == 0 && u.Second() == 0 && u.Nanosecond() == 0 {
		return u.AddDate(0, 0, -1).Format(time.DateOnly)
	}
	return d.Format(time.RFC3339)
}

// MarshalJSON writes the text of MarshalText as a JSON string (it overrides time.Time's).
func (d Date) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a JSON string as UnmarshalText does.
func (d *Date) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("date: %w", err)
	}
	return d.UnmarshalText([]byte(s))
}
