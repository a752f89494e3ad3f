package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConformance runs the OCI distribution-spec conformance suite, every
// API group and the default data sets, against the binary: 0 failures.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testConformance(t, b)
		})
	}
}

func testConformance(t *testing.T, b backend) {
	bin := tool(t, "conformance.test")
	reg := startRegistry(t, b.options(t, ""))
	results := t.TempDir()
	env := []string{
		"OCI_REGISTRY=" + reg.Addr,
		"OCI_TLS=disabled",
		"OCI_REPO1=conformance/one",
		"OCI_REPO2=conformance/two",
		"OCI_VERSION=1.1",
		"OCI_API_PULL=true",
		"OCI_API_PUSH=true",
		"OCI_API_TAGS_LIST=true",
		"OCI_API_TAGS_DELETE=true",
		"OCI_API_MANIFESTS_DELETE=true",
		"OCI_API_BLOBS_DELETE=true",
		"OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_REFERRER=true",
		"OCI_RESULTS_DIR=" + results,
	}
	out, err := runErr(env, bin)
	summary := out
	if i := strings.Index(out, "OCI Conformance Result"); i >= 0 {
		summary = out[i:]
	}
	t.Logf("conformance summary:\n%s", summary)
	if err != nil {
		t.Errorf("conformance suite failed: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "failed test") {
			t.Errorf("%s", line)
		}
	}
	m := regexp.MustCompile(`FAIL\.+:\s+(\d+)`).FindStringSubmatch(out)
	if m == nil || m[1] != "0" {
		t.Errorf("conformance FAIL count: %v", m)
	}
	total := regexp.MustCompile(`Pass\.+:\s+(\d+)`).FindStringSubmatch(out)
	if total == nil || total[1] == "0" {
		t.Errorf("conformance passed nothing: %v", total)
	}
	if _, err := os.Stat(filepath.Join(results, "junit.xml")); err != nil {
		t.Errorf("no junit report: %v", err)
	}
}
