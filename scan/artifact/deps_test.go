package artifact

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the artifact formats free of the server and of registry clients:
// blobs come in through a Fetch function.
func TestDependencies(t *testing.T) {
	t.Parallel()
	const mod = "github.com/portcullis/portcullis/"
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(d, mod) && !strings.HasPrefix(d, mod+"scan"),
			strings.HasPrefix(d, "github.com/distribution/"),
			strings.HasPrefix(d, "github.com/google/go-containerregistry/pkg/v1/remote"),
			strings.HasPrefix(d, "oras.land/"),
			d == "net/http":
			t.Errorf("artifact depends on %s", d)
		}
	}
}
