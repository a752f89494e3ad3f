package app

import (
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/config"
)

// TestCompileScanGates: the scan policies of the configuration become the
// scanner's gates, the first matching policy applying to a repository;
// what does not compile is an error with its key.
func TestCompileScanGates(t *testing.T) {
	t.Parallel()
	cfg := config.Scan{Policies: []config.ScanPolicy{
		{Name: "prod", Repositories: []string{"prod/**"}, Mode: "enforce", MaxSeverity: "medium",
			Allowlist: []config.ScanAllow{{ID: "CVE-2024-1", Expires: "2030-01-01"}}},
		{Name: "rest", Repositories: []string{"**"}, Mode: "audit", Timeout: config.Duration(time.Minute)},
	}}
	gates, err := compileScanGates(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := gates.For("prod/api")
	if !ok || g.Name != "prod" || g.Mode != "enforce" || g.Gate.MaxSeverity != "medium" || len(g.Gate.Allowlist) != 1 ||
		g.Gate.Allowlist[0].Expires.Year() != 2030 {
		t.Errorf("prod/api: %+v, %v", g, ok)
	}
	if g, ok := gates.For("team/web"); !ok || g.Name != "rest" || g.Timeout != time.Minute {
		t.Errorf("team/web: %+v, %v", g, ok)
	}
	if _, ok := (scanGates{}).For("team/web"); ok {
		t.Error("a policy applies without any configured")
	}

	for name, p := range map[string]config.ScanPolicy{
		"scan.policies[0].allowlist[0].expires":      {Repositories: []string{"a/**"}, Allowlist: []config.ScanAllow{{ID: "X", Expires: "soon"}}},
		"scan.policies[0]: invalid scan gate policy": {Repositories: []string{"a/**"}, MaxSeverity: "severe"},
	} {
		_, err := compileScanGates(config.Scan{Policies: []config.ScanPolicy{p}})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}
