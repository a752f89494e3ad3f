package scan

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the scanner small (DESIGN.md §6): of osv-scalibr only the semantic
// package, no syft, trivy or grype, nothing of the server, and each sub-package to its job.
// The inventory reads rpm databases itself: no SQL engine, not go-rpmdb (see
// inventory/rpm.go for why).
func TestDependencies(t *testing.T) {
	t.Parallel()
	const mod = "github.com/portcullis/portcullis/"
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{"./", []string{mod + "internal/", mod + "auth", mod + "storage", mod + "config"}},
		{"./inventory", []string{mod + "scan", "github.com/google/go-containerregistry/", "net/http",
			"database/sql", "modernc.org/", "github.com/erikvarga/go-rpmdb/", "github.com/knqyf263/go-rpmdb/"}},
		{"./osv", []string{mod + "scan/", "net/http"}},
		{"./vulndb", []string{mod + "scan/inventory", "net/http"}},
	}
	for _, tt := range tests {
		out, err := exec.Command("go", "list", "-deps", tt.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", tt.pkg, err)
		}
		deps := strings.Fields(string(out))
		thirdParty := 0
		self := strings.TrimSuffix(mod+"scan"+strings.TrimPrefix(tt.pkg, "."), "/")
		for _, d := range deps {
			if d == self {
				continue
			}
			if strings.Contains(strings.Split(d, "/")[0], ".") && !strings.HasPrefix(d, mod) {
				thirdParty++
			}
			switch {
			case strings.HasPrefix(d, "github.com/google/osv-scalibr") && d != "github.com/google/osv-scalibr/semantic",
				strings.Contains(d, "anchore/syft"), strings.Contains(d, "aquasecurity/trivy"), strings.Contains(d, "anchore/grype"):
				t.Errorf("%s depends on %s", tt.pkg, d)
			}
			for _, f := range tt.forbidden {
				if d == strings.TrimSuffix(f, "/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) || (f == mod+"scan" && d == f) {
					t.Errorf("%s depends on %s", tt.pkg, d)
				}
			}
		}
		if thirdParty > 60 {
			t.Errorf("%s pulls in %d third-party packages; keep the scanner small", tt.pkg, thirdParty)
		}
	}
}
