package trust_test

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// forbidden are import path prefixes package trust must not depend on, even
// indirectly: the server's internals, the other domain packages (auth
// included: repository patterns come from policy), and cosign itself (its
// command tree pulls in every KMS and cloud SDK).
var forbidden = []string{
	"github.com/portcullis/portcullis/internal/",
	"github.com/portcullis/portcullis/auth",
	"github.com/portcullis/portcullis/scan",
	"github.com/portcullis/portcullis/storage",
	"github.com/portcullis/portcullis/replication",
	"github.com/distribution/distribution/",
	"github.com/sigstore/cosign/",
	"github.com/sigstore/sigstore/pkg/signature/kms/",
}

// TestImports checks the package's doc comment and direct imports, then its
// whole dependency graph.
func TestImports(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	documented := false
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		documented = documented || file.Doc != nil
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if isForbidden(path) {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
	if !documented {
		t.Error("package trust has no doc comment")
	}

	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, path := range strings.Fields(string(out)) {
		if isForbidden(path) {
			t.Errorf("trust depends on %s", path)
		}
	}
}

func isForbidden(path string) bool {
	for _, p := range forbidden {
		if path == strings.TrimSuffix(p, "/") || strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
