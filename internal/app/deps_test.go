package app_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps dependencies pointing one way:
// cmd → internal/app → domain packages → config types → policy grammar
// (standard library only). It also keeps logrus (distribution's logger) and
// expvar (which would serve distribution's configuration, secrets included)
// confined.
func TestLayering(t *testing.T) {
	t.Parallel()
	const module = "github.com/portcullis/portcullis"
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(goTool, "list", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		for _, imp := range strings.Fields(imports) {
			irel, ours := strings.CutPrefix(imp, module+"/")
			switch {
			case imp == "expvar":
				t.Errorf("%s imports expvar: it would serve distribution's configuration", rel)
			case imp == "github.com/sirupsen/logrus" && rel != "internal/app":
				t.Errorf("%s imports logrus: only internal/app configures distribution's logger", rel)
			case !ours:
			case irel == "internal/app" && !strings.HasPrefix(rel, "cmd/") && rel != "internal/testenv":
				t.Errorf("%s imports internal/app: only cmd/ (and the test harness) may", rel)
			case rel == "policy":
				t.Errorf("policy imports %s: it imports only the standard library", irel)
			case (rel == "config" || strings.HasPrefix(rel, "config/")) && irel != "policy":
				t.Errorf("config imports %s: config holds types only (checked with the policy grammar)", irel)
			case isDomain(rel) && strings.HasPrefix(irel, "internal/"):
				t.Errorf("domain package %s imports %s", rel, irel)
			}
		}
	}
}

func isDomain(rel string) bool {
	for _, d := range []string{"auth", "storage", "scan", "trust", "replication"} {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}
