package e2e

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestAdmissionWebhooks pushes tags through webhooks that allow, deny, time
// out and answer garbage, over plain HTTP and TLS with a CA file.
func TestAdmissionWebhooks(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	var mu sync.Mutex
	var reviews []map[string]any
	record := func(r *http.Request) {
		var rv map[string]any
		_ = json.NewDecoder(r.Body).Decode(&rv)
		mu.Lock()
		reviews = append(reviews, rv)
		mu.Unlock()
	}
	allow := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(r)
		fmt.Fprint(w, `{"allowed":true,"reason":"ok"}`)
	}))
	defer allow.Close()
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(r)
		fmt.Fprint(w, `{"allowed":false,"reason":"image lacks the team label"}`)
	}))
	defer deny.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		fmt.Fprint(w, `{"allowed":true}`)
	}))
	defer slow.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html>proxy error</html>`)
	}))
	defer garbage.Close()

	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: allow.Certificate().Raw})))
	cfg := fmt.Sprintf(`version: 1
admission:
  webhooks:
    - name: tls-allow
      url: %s
      caFile: %s
      repositories: ["ok/**", "denied/**"]
    - name: policy-bot
      url: %s
      repositories: ["denied/**"]
    - name: slowpoke
      url: %s
      timeout: 1s
      repositories: ["slow/**"]
    - name: lenient
      url: %s
      timeout: 1s
      failurePolicy: ignore
      repositories: ["lenient/**"]
    - name: broken
      url: %s
      repositories: ["garbage/**"]
`, allow.URL, ca, deny.URL, slow.URL, slow.URL, garbage.URL)
	reg := startRegistry(t, startOptions{config: cfg})
	img, _ := random.Image(1024, 1)
	tarPath := filepath.Join(dir, "img.tar")
	writeTarball(t, tarPath, img)
	push := func(repo string) (string, error) {
		return runErr(nil, crane, "push", "--insecure", tarPath, reg.Addr+"/"+repo+":v1")
	}

	if out, err := push("ok/app"); err != nil {
		t.Errorf("allowed push: %v\n%s", err, out)
	}
	if out, err := push("denied/app"); err == nil || !strings.Contains(out, "denied by admission webhook policy-bot: image lacks the team label") {
		t.Errorf("denied push: %v\n%s", err, out)
	}
	if out, err := push("slow/app"); err == nil || !strings.Contains(out, "slowpoke") {
		t.Errorf("timed-out webhook (fail closed): %v\n%s", err, out)
	}
	if out, err := push("lenient/app"); err != nil {
		t.Errorf("timed-out webhook with failurePolicy ignore: %v\n%s", err, out)
	}
	if out, err := push("garbage/app"); err == nil || !strings.Contains(out, "broken") {
		t.Errorf("garbage-answering webhook: %v\n%s", err, out)
	}
	// Repositories no webhook covers are not reviewed; denied tags were not stored.
	if out, err := push("free/app"); err != nil {
		t.Errorf("unreviewed push: %v\n%s", err, out)
	}
	if out, err := runErr(nil, crane, "digest", "--insecure", reg.Addr+"/denied/app:v1"); err == nil {
		t.Errorf("a denied tag exists: %s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	var sawReview bool
	for _, rv := range reviews {
		if rv["repository"] == "ok/app" && rv["tag"] == "v1" && rv["digest"] == imageDigest(t, img) {
			sawReview = true
		}
	}
	if !sawReview {
		t.Errorf("no review of ok/app:v1 with its digest among %v", reviews)
	}
}
