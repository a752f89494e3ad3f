package storage

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the package free of the rest of Portcullis, of the
// MinIO server (AGPL: we run it, never link it) and of logrus.
func TestDependencies(t *testing.T) {
	t.Parallel()
	const module = "github.com/portcullis/portcullis/"
	pkgs := []string{module + "storage", module + "storage/miniotest"}
	// go test puts its own go first on $PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command: %v", err)
	}

	out, err := exec.Command(goTool, append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, module) && dep != pkgs[0] && dep != pkgs[1]:
			t.Errorf("depends on %s: storage must not import Portcullis packages", dep)
		case dep == "github.com/minio/minio" || strings.HasPrefix(dep, "github.com/minio/minio/"):
			t.Errorf("depends on %s: the MinIO server is AGPL, run it instead", dep)
		}
	}

	out, err = exec.Command(goTool, append([]string{"list", "-f", `{{join .Imports "\n"}}`}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, imp := range strings.Fields(string(out)) {
		if imp == "github.com/sirupsen/logrus" {
			t.Errorf("imports logrus: use log/slog if logging is needed")
		}
	}
}
