package scan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/scan/osv"
)

func finding(id, pkg, version, fixed string, level osv.Level, score float64, aliases ...string) Finding {
	return Finding{ID: id, Aliases: aliases, Ecosystem: "npm", Package: pkg, Version: version, FixedVersion: fixed,
		Severity: osv.Rating{Level: level, Score: score}}
}

func TestGateEvaluate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	day := func(s string) Date {
		var d Date
		if err := d.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	report := &Report{Findings: []Finding{
		finding("GHSA-jfh8-c2jp-5v3q", "log4j-core", "2.14.1", "2.15.0", osv.Critical, 10, "CVE-2021-44228"),
		finding("GHSA-35jh-r3h4-6jhm", "lodash", "4.17.20", "4.17.21", osv.High, 7.2, "CVE-2021-23337"),
		finding("GHSA-29mw-wpgm-hmr9", "lodash", "4.17.20", "4.17.21", osv.Medium, 5.3),
		finding("DEBIAN-CVE-2026-103111", "libpcre2-8-0", "10.42-1", "", osv.Unknown, 0, "CVE-2026-103111"),
	}}
	unchecked := &Report{Unchecked: []Unchecked{{"Ubuntu:23.04", "dpkg", 4, "the vulnerability database has no Ubuntu:23.04 records"}}}
	withUnchecked := &Report{Findings: report.Findings, Unchecked: unchecked.Unchecked}
	tests := []struct {
		name       string
		policy     GatePolicy
		report     *Report
		pass       bool
		violations []string
		reason     []string // substrings of Reason
	}{
		{"default denies critical and unknown", GatePolicy{}, report, false,
			[]string{"GHSA-jfh8-c2jp-5v3q", "DEBIAN-CVE-2026-103111"},
			[]string{"2 findings above HIGH", "GHSA-jfh8-c2jp-5v3q (CVE-2021-44228) CRITICAL in log4j-core 2.14.1, fixed in 2.15.0",
				"DEBIAN-CVE-2026-103111 (CVE-2026-103111) UNKNOWN (counted as CRITICAL) in libpcre2-8-0 10.42-1, no fix known"}},
		{"unknown ignored", GatePolicy{UnknownSeverity: "unknown"}, report, false, []string{"GHSA-jfh8-c2jp-5v3q"}, []string{"1 finding above HIGH"}},
		{"medium max, worst first", GatePolicy{MaxSeverity: "medium", UnknownSeverity: "low"}, report, false,
			[]string{"GHSA-jfh8-c2jp-5v3q", "GHSA-35jh-r3h4-6jhm"}, nil},
		{"none allowed", GatePolicy{MaxSeverity: "none", UnknownSeverity: "LOW"}, report, false,
			[]string{"GHSA-jfh8-c2jp-5v3q", "GHSA-35jh-r3h4-6jhm", "GHSA-29mw-wpgm-hmr9", "DEBIAN-CVE-2026-103111"},
			[]string{"4 findings (none allowed)", "; and 1 more"}},
		{"critical max passes everything", GatePolicy{MaxSeverity: "critical"}, report, true, nil, []string{"passed: no finding above CRITICAL"}},
		{"allowlist by alias, case-insensitive", GatePolicy{UnknownSeverity: "unknown", Allowlist: []AllowEntry{{ID: "cve-2021-44228", Expires: day("2026-06-15")}}},
			report, true, nil, []string{"passed", "(1 finding allowlisted)"}},
		{"allowlist expired", GatePolicy{UnknownSeverity: "unknown", Allowlist: []AllowEntry{{ID: "CVE-2021-44228", Expires: day("2026-06-14")}}},
			report, false, []string{"GHSA-jfh8-c2jp-5v3q"}, []string{"allowlist entry CVE-2021-44228 expired 2026-06-14"}},
		{"allowlist expiry instant", GatePolicy{UnknownSeverity: "unknown", Allowlist: []AllowEntry{{ID: "GHSA-jfh8-c2jp-5v3q", Expires: day("2026-06-15T12:00:00Z")}}},
			report, false, []string{"GHSA-jfh8-c2jp-5v3q"}, []string{"expired 2026-06-15T12:00:00Z"}},
		{"allowlist other package", GatePolicy{UnknownSeverity: "unknown", Allowlist: []AllowEntry{{ID: "CVE-2021-44228", Package: "lodash"}}},
			report, false, []string{"GHSA-jfh8-c2jp-5v3q"}, nil},
		{"allowlist never expires", GatePolicy{Allowlist: []AllowEntry{{ID: "GHSA-jfh8-c2jp-5v3q"}, {ID: "DEBIAN-CVE-2026-103111", Package: "libpcre2-8-0"}}},
			report, true, nil, nil},
		{"ignore unfixed", GatePolicy{IgnoreUnfixed: true, Allowlist: []AllowEntry{{ID: "CVE-2021-44228"}}}, report, true, nil, nil},
		{"clean report", GatePolicy{MaxSeverity: "none"}, &Report{}, true, nil, []string{"scan policy passed: no finding"}},
		{"unchecked packages pass by default", GatePolicy{MaxSeverity: "none"}, unchecked, true, nil, []string{"scan policy passed"}},
		{"unchecked packages fail when asked", GatePolicy{MaxSeverity: "none", FailOnUnchecked: true}, unchecked, false, nil,
			[]string{"scan policy failed: packages not checked: 4 dpkg packages (Ubuntu:23.04): the vulnerability database has no Ubuntu:23.04 records"}},
		{"findings and unchecked packages", GatePolicy{FailOnUnchecked: true}, withUnchecked, false,
			[]string{"GHSA-jfh8-c2jp-5v3q", "DEBIAN-CVE-2026-103111"}, []string{"2 findings above HIGH", "; and 4 packages not checked"}},
		{"no report", GatePolicy{}, nil, false, nil, []string{"no scan report"}},
		{"invalid policy fails closed", GatePolicy{MaxSeverity: "severe"}, &Report{}, false, nil, []string{"maxSeverity"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.policy.Evaluate(tt.report, now)
			if res.Pass != tt.pass {
				t.Errorf("pass = %v, want %v (%s)", res.Pass, tt.pass, res.Reason)
			}
			var ids []string
			for _, f := range res.Violations {
				ids = append(ids, f.ID)
			}
			if diff := cmp.Diff(tt.violations, ids); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
			for _, s := range tt.reason {
				if !strings.Contains(res.Reason, s) {
					t.Errorf("reason %q lacks %q", res.Reason, s)
				}
			}
			if strings.Contains(res.Reason, "\n") {
				t.Errorf("reason spans lines: %q", res.Reason)
			}
		})
	}
}

func TestGateOnScannedImage(t *testing.T) {
	t.Parallel()
	_, db := loadTestDB(t)
	stored, err := NewIndexer(IndexOptions{}).Inventory(t.Context(), imageOf(t, debianLayers(t)...), "")
	if err != nil {
		t.Fatal(err)
	}
	r := stored.Report(db, Policy{})
	res := GatePolicy{}.Evaluate(r, time.Now())
	if res.Pass || len(res.Violations) != 27 || !strings.Contains(res.Reason, "27 findings above HIGH") || !strings.Contains(res.Reason, "; and 24 more") {
		t.Errorf("debian image under the default gate: pass %v, %d violations, reason %q", res.Pass, len(res.Violations), res.Reason)
	}
	if res := (GatePolicy{UnknownSeverity: "unknown"}).Evaluate(r, time.Now()); !res.Pass {
		t.Errorf("unknown ignored: %s", res.Reason)
	}
}

func TestGatePolicyDecode(t *testing.T) {
	t.Parallel()
	const doc = `{
  "maxSeverity": "medium",
  "unknownSeverity": "high",
  "ignoreUnfixed": true,
  "allowlist": [
    {"id": "CVE-2021-44228", "package": "log4j-core", "expires": "2026-12-31", "reason": "not reachable"},
    {"id": "GHSA-35jh-r3h4-6jhm", "expires": "2027-01-15T10:00:00Z"},
    {"id": "GO-2026-5026"}
  ]
}`
	var p GatePolicy
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []time.Time{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 15, 10, 0, 0, 0, time.UTC), {}}
	for i, e := range p.Allowlist {
		if !e.Expires.Equal(want[i]) {
			t.Errorf("allowlist[%d].expires = %v, want %v", i, e.Expires.Time, want[i])
		}
	}
	if p.MaxSeverity != "medium" || !p.IgnoreUnfixed || p.Allowlist[0].Reason != "not reachable" {
		t.Errorf("decoded %+v", p)
	}
	// JSON round trip keeps the days as written.
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"expires":"2026-12-31"`) || strings.Count(string(b), "expires") != 2 {
		t.Errorf("json: %s", b)
	}
	var back GatePolicy
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, back); diff != "" {
		t.Errorf("json round trip (-want +got):\n%s", diff)
	}

	bad := GatePolicy{MaxSeverity: "severe", UnknownSeverity: "none", Allowlist: []AllowEntry{{ID: ""}, {ID: "CVE-1"}, {ID: "cve-1"}}}
	err = bad.Validate()
	if !errors.Is(err, ErrGatePolicy) {
		t.Fatalf("err = %v", err)
	}
	for _, s := range []string{"maxSeverity", "unknownSeverity", "allowlist[0].id: required", "allowlist[2].id: cve-1 repeats allowlist[1]"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	var d Date
	if err := d.UnmarshalText([]byte("31/12/2026")); err == nil {
		t.Error("bad date accepted")
	}
	if err := json.Unmarshal([]byte(`{"expires": "tomorrow", "id": "X"}`), &AllowEntry{}); err == nil {
		t.Error("bad json date accepted")
	}
}

// FuzzGatePolicy decodes arbitrary JSON as a policy and evaluates it: no panic, and a policy
// that does not validate never passes.
func FuzzGatePolicy(f *testing.F) {
	f.Add(`{"maxSeverity": "medium", "allowlist": [{"id": "CVE-2021-44228", "expires": "2026-12-31"}]}`, int64(0))
	f.Add(`{"maxSeverity": "none", "unknownSeverity": "unknown", "ignoreUnfixed": true}`, int64(1<<40))
	f.Add(`{"allowlist": [{"id": "", "package": "x"}]}`, int64(-1))
	report := &Report{Findings: []Finding{
		finding("GHSA-jfh8-c2jp-5v3q", "log4j-core", "2.14.1", "2.15.0", osv.Critical, 10, "CVE-2021-44228"),
		finding("X", "p", "1", "", osv.Unknown, 0),
		finding("Y", "p", "1", "2", "bogus", 0),
	}}
	f.Fuzz(func(t *testing.T, doc string, unix int64) {
		var p GatePolicy
		if json.Unmarshal([]byte(doc), &p) != nil {
			return
		}
		res := p.Evaluate(report, time.Unix(unix, 0))
		if p.Validate() != nil && res.Pass {
			t.Fatalf("invalid policy %+v passed", p)
		}
		if p.Validate() == nil && strings.EqualFold(p.MaxSeverity, "high") && p.UnknownSeverity == "" && !p.IgnoreUnfixed && len(p.Allowlist) == 0 && res.Pass {
			t.Fatal("a finding of no known severity passed a default gate")
		}
		if res.Pass != (len(res.Violations) == 0) && p.Validate() == nil {
			t.Fatalf("pass %v with %d violations", res.Pass, len(res.Violations))
		}
	})
}
