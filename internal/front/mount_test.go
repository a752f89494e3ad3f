package front

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/admission"
)

// withholding withholds every blob of repository "gated".
type withholding struct{ recordingAdmission }

func (*withholding) Active(repo string) bool { return repo == "gated" }

func (*withholding) AllowBlob(_ context.Context, b admission.BlobRead) error {
	if b.Repository == "gated" {
		return errDenied
	}
	return nil
}

var errDenied = &deniedError{}

type deniedError struct{}

func (*deniedError) Error() string { return "withheld" }

// TestMountOfWithheldBlob: a mount from a repository that withholds the
// blob reaches the core as an ordinary upload; other mounts are untouched.
func TestMountOfWithheldBlob(t *testing.T) {
	t.Parallel()
	ns, refs, driver := memStorage(t)
	log := slog.New(slog.DiscardHandler)
	var seen string
	core := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL.RawQuery
		w.WriteHeader(http.StatusAccepted)
	})
	h, err := New(core, refs, ns, driver, Options{Admission: &withholding{}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("layer")
	for _, tt := range []struct{ from, want string }{
		{"gated", ""},
		{"open", "mount=" + d.String() + "&from=open"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/v2/mine/blobs/uploads/?mount="+d.String()+"&from="+tt.from, nil)
		h.ServeHTTP(httptest.NewRecorder(), req)
		if seen != tt.want {
			t.Errorf("mount from %s reached the core as %q, want %q", tt.from, seen, tt.want)
		}
	}
}
