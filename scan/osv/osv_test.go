package osv

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func rng(typ string, events ...Event) Range { return Range{Type: typ, Events: events} }

func TestAffects(t *testing.T) {
	t.Parallel()
	intro := func(v string) Event { return Event{Introduced: v} }
	fixed := func(v string) Event { return Event{Fixed: v} }
	last := func(v string) Event { return Event{LastAffected: v} }
	limit := func(v string) Event { return Event{Limit: v} }
	tests := []struct {
		name      string
		ecosystem string
		a         Affected
		version   string
		want      Match
	}{
		{"debian below fix", "Debian:12", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("5.36.0-7+deb12u4"))}}, "5.36.0-7+deb12u1", Match{true, "5.36.0-7+deb12u4"}},
		{"debian at fix", "Debian:12", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("5.36.0-7+deb12u4"))}}, "5.36.0-7+deb12u4", Match{}},
		{"debian epoch", "Debian:12", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1:2.0-1"))}}, "3.0-1", Match{true, "1:2.0-1"}},
		{"debian tilde", "Debian:12", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1.0"))}}, "1.0~rc1", Match{true, "1.0"}},
		{"alpine revision", "Alpine:v3.20", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1.36.1-r29"))}}, "1.36.1-r28", Match{true, "1.36.1-r29"}},
		{"alpine revision fixed", "Alpine:v3.20", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1.36.1-r27"))}}, "1.36.1-r28", Match{}},
		{"alpine suffix", "Alpine:v3.20", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1.2.2_pre2-r0"))}}, "1.2.1-r0", Match{true, "1.2.2_pre2-r0"}},
		{"semver two ranges, second", "Go", Affected{Ranges: []Range{rng(RangeSemver, intro("0"), fixed("1.25.9"), intro("1.26.0-0"), fixed("1.26.6"))}}, "1.26.5", Match{true, "1.26.6"}},
		{"semver between ranges", "Go", Affected{Ranges: []Range{rng(RangeSemver, intro("0"), fixed("1.25.9"), intro("1.26.0-0"), fixed("1.26.6"))}}, "1.25.10", Match{}},
		{"semver prerelease below introduced", "npm", Affected{Ranges: []Range{rng(RangeSemver, intro("1.0.0"), fixed("1.2.6"))}}, "1.0.0-rc.1", Match{}},
		{"npm events out of order", "npm", Affected{Ranges: []Range{rng(RangeEcosystem, fixed("1.2.6"), intro("1.0.0"))}}, "1.2.5", Match{true, "1.2.6"}},
		{"last_affected at", "npm", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), last("4.5.1"))}}, "4.5.1", Match{true, ""}},
		{"last_affected above", "npm", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), last("4.5.1"))}}, "4.5.2", Match{}},
		{"limit", "Go", Affected{Ranges: []Range{rng(RangeSemver, intro("0"), limit("2.0.0"))}}, "2.1.0", Match{}},
		{"under limit", "Go", Affected{Ranges: []Range{rng(RangeSemver, intro("0"), limit("2.0.0"))}}, "1.9.0", Match{true, ""}},
		{"explicit versions", "PyPI", Affected{Versions: []string{"2.30.0"}}, "2.30.0", Match{true, ""}},
		{"pypi ordering", "PyPI", Affected{Ranges: []Range{rng(RangeEcosystem, intro("2.3.0"), fixed("2.31.0"))}}, "2.31.0rc1", Match{true, "2.31.0"}},
		{"maven ordering", "Maven", Affected{Ranges: []Range{rng(RangeEcosystem, intro("2.0-beta9"), fixed("2.3.1"))}}, "2.0", Match{true, "2.3.1"}},
		{"red hat below fix, epochs", "Red Hat:enterprise_linux:9", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1:3.0.7-28.el9_4"))}}, "1:3.0.7-27.el9", Match{true, "1:3.0.7-28.el9_4"}},
		{"red hat zero epoch written", "Red Hat:enterprise_linux:9", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("0:2.34-83.el9.7"))}}, "2.34-60.el9", Match{true, "0:2.34-83.el9.7"}},
		{"red hat release with a dist suffix", "Red Hat:enterprise_linux:9", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("0:1.50-481.el9_2"))}}, "1.50-481.el9", Match{true, "0:1.50-481.el9_2"}},
		{"rocky epoch above a higher version", "Rocky Linux:9", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("3.0.8-1.el9"))}}, "1:3.0.7-27.el9", Match{}},
		{"rpm tilde before release", "AlmaLinux:9", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("2.0-1.el9"))}}, "2.0~rc1-1.el9", Match{true, "2.0-1.el9"}},
		{"suse release", "SUSE:15 SP5", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1.1.1l-150500.17.25.1"))}}, "1.1.1l-150500.17.19.1", Match{true, "1.1.1l-150500.17.25.1"}},
		{"opensuse at fix", "openSUSE:Leap 15.5", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("8.0.1-150400.5.35.1"))}}, "8.0.1-150400.5.35.1", Match{}},
		{"git ranges ignored", "Go", Affected{Ranges: []Range{rng(RangeGit, intro("0"), fixed("abc"))}}, "1.0.0", Match{}},
		{"unparsable installed version", "Debian:12", Affected{Ranges: []Range{rng(RangeEcosystem, intro("0"), fixed("1.0"))}}, "not a version!", Match{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Affects(tt.ecosystem, tt.version); got != tt.want {
				t.Errorf("Affects(%q) = %+v, want %+v", tt.version, got, tt.want)
			}
		})
	}
}

// TestDebianOrderAgainstDpkg checks the ordering used for Debian against dpkg itself; dpkg is
// required (it is on every Debian machine this project runs on).
func TestDebianOrderAgainstDpkg(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Fatal("dpkg is required: the Debian version order is checked against it")
	}
	versions := []string{"5.36.0-7+deb12u1", "5.36.0-7+deb12u4", "5.36.0-7+deb12u1+b1", "5.36.0-7", "1:1.0", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "10.42-1", "10.42-1+deb12u2", "2.6.1", "2.6.2", "0:2.6.2", "1.0a", "1.0~~", "1.0.0"}
	for _, a := range versions {
		for _, b := range versions {
			aff := Affected{Ranges: []Range{rng(RangeEcosystem, Event{Introduced: "0"}, Event{Fixed: b})}}
			got := aff.Affects("Debian:12", a).Affected // a < b
			err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if want := err == nil; got != want {
				t.Errorf("%s < %s: ours %v, dpkg %v", a, b, got, want)
			}
		}
	}
}

func TestParseValidate(t *testing.T) {
	t.Parallel()
	good := `{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"a"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.0.0"}]}]}]}`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for name, bad := range map[string]string{
		"not json":           `{"id":`,
		"no id":              `{"modified":"2024-01-01T00:00:00Z"}`,
		"no modified":        `{"id":"X-1"}`,
		"bad time":           `{"id":"X-1","modified":"yesterday"}`,
		"unknown range type": strings.Replace(good, "SEMVER", "CALVER", 1),
		"two fields":         strings.Replace(good, `{"introduced":"0"}`, `{"introduced":"0","fixed":"2"}`, 1),
		"no introduced":      strings.Replace(good, `{"introduced":"0"},`, ``, 1),
		"no package name":    strings.Replace(good, `"name":"a"`, `"name":""`, 1),
		"empty events":       strings.Replace(good, `[{"introduced":"0"},{"fixed":"1.0.0"}]`, `[]`, 1),
		"severity no score":  strings.Replace(good, `"affected"`, `"severity":[{"type":"CVSS_V3"}],"affected"`, 1),
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: err = %v, want ErrInvalidRecord", name, err)
		}
	}
}

func TestRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    Record
		want Level
		sc   float64
	}{
		{"cvss 3.1 critical", Record{Severity: []Severity{{"CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}}}, Critical, 10},
		{"cvss 3.1 medium", Record{Severity: []Severity{{"CVSS_V3", "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:N/A:N"}}}, Medium, 5.3},
		{"cvss 3.0 high", Record{Severity: []Severity{{"CVSS_V3", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}}}, High, 7.5},
		{"cvss 4 preferred over 3", Record{Severity: []Severity{{"CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}, {"CVSS_V4", "CVSS:4.0/AV:L/AC:H/AT:P/PR:H/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N"}}}, Low, 1},
		{"database_specific", Record{DatabaseSpecific: DatabaseSpecific{Severity: "MODERATE"}}, Medium, 0},
		{"bad vector falls back", Record{Severity: []Severity{{"CVSS_V3", "CVSS:3.1/nonsense"}}, DatabaseSpecific: DatabaseSpecific{Severity: "LOW"}}, Low, 0},
		{"nothing", Record{}, Unknown, 0},
	}
	for _, tt := range tests {
		got := tt.r.Rate()
		if got.Level != tt.want || (tt.sc != 0 && tt.name != "cvss 4 preferred over 3" && got.Score != tt.sc) {
			t.Errorf("%s: got %+v, want %s %v", tt.name, got, tt.want, tt.sc)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"id":"GHSA-x","modified":"2024-01-01T00:00:00Z","aliases":["CVE-1"],"affected":[{"package":{"ecosystem":"npm","name":"a"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.0.0"},{"last_affected":"0.9"},{"limit":"*"}]}],"versions":["0.1.0"]}],"severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]}`))
	f.Add([]byte(`{"id":"DEBIAN-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Debian:12","name":"perl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"5.36.0-7+deb12u4"}]}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			return
		}
		r.Rate()
		for i := range r.Affected {
			eco := r.Affected[i].Package.Ecosystem
			for _, v := range []string{"0", "1.0.0", "5.36.0-7+deb12u1", "1.36.1-r28", "v1.2.3", ""} {
				r.Affected[i].Affects(eco, v)
			}
		}
	})
}
