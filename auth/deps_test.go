package auth_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps each auth package to its job: the policy stays pure,
// audit and ratelimit stay independent of HTTP and of each other.
func TestImports(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dir       string
		forbidden []string
	}{
		{".", []string{"net/http", "os", "io", "log/slog", "time", "github.com/portcullis/portcullis/auth/", "github.com/distribution/", "github.com/portcullis/portcullis/internal/"}},
		{"audit", []string{"net/http", "github.com/portcullis/portcullis/", "github.com/distribution/"}},
		{"ratelimit", []string{"net/http", "os", "github.com/portcullis/portcullis/", "github.com/distribution/"}},
		{"token", []string{"github.com/portcullis/portcullis/internal/", "github.com/distribution/distribution/v3/registry/handlers", "github.com/distribution/distribution/v3/registry/storage/driver/", "github.com/sirupsen/logrus"}},
	}
	for _, tt := range tests {
		files, err := filepath.Glob(filepath.Join(tt.dir, "*.go"))
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
				if slices.ContainsFunc(tt.forbidden, func(p string) bool { return path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) }) {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
		if !documented {
			t.Errorf("package %s has no doc comment", tt.dir)
		}
	}
}
