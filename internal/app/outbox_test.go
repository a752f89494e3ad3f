package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/internal/testenv"
)

// TestWritesRecordedInOutbox: each successful manifest push and delete is
// recorded in the scan outbox, moments after its answer; a refused write
// is not. (The scanner does not run in this harness, so the entries stay.)
func TestWritesRecordedInOutbox(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	pending := func() string {
		t.Helper()
		resp, err := http.Get(reg.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "portcullis_scan_outbox_pending "); ok {
				return v
			}
		}
		t.Fatal("/metrics lacks portcullis_scan_outbox_pending")
		return ""
	}
	// settle waits for the count to be want, then checks that it stays so
	// while anything still queued is committed (in a few milliseconds).
	settle := func(want, after string) {
		t.Helper()
		got := pending()
		for deadline := time.Now().Add(10 * time.Second); got != want && time.Now().Before(deadline); got = pending() {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		if got = pending(); got != want {
			t.Errorf("pending %s after %s, want %s", got, after, want)
		}
	}
	if got := pending(); got != "0" {
		t.Fatalf("pending %s at start", got)
	}
	img, _ := random.Image(512, 1)
	if err := remote.Write(mustRef(t, reg.Host+"/events/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	settle("1", "a push")
	// A manifest PUT that fails (unknown blobs) records nothing.
	req, _ := http.NewRequest(http.MethodPut, reg.URL+"/v2/events/app/manifests/v2", strings.NewReader(
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}`))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		t.Fatal("a manifest with an unknown config was accepted")
	}
	settle("1", "a refused push")
	d, _ := img.Digest()
	if err := remote.Delete(mustRef(t, reg.Host+"/events/app@"+d.String())); err != nil {
		t.Fatal(err)
	}
	settle("2", "a delete")
}
