package app_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/internal/testenv"
)

func TestMetricsHealthAndLogs(t *testing.T) {
	reg := testenv.Start(t, nil)
	img, _ := random.Image(2048, 2)
	if err := remote.Write(mustRef(t, reg.Host+"/ops/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	// A request carrying credentials: they must not reach any log line. A
	// sha512 blob the registry does not have: the front handler leaves it
	// to distribution, which serves it, and logs.
	req, _ := http.NewRequest("GET", reg.URL+"/v2/ops/app/blobs/sha512:"+strings.Repeat("0", 128), nil)
	secret := "hunter2-very-secret"
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:"+secret)))
	req.Header.Set("X-Request-Id", "trace-me-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(reg.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}

	resp, err = http.Get(reg.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`portcullis_http_requests_total{code="201",method="PUT",route="manifest"} 1`,
		`portcullis_http_request_duration_seconds_bucket{method="PATCH",route="blob_upload"`,
		`portcullis_http_request_bytes_total{route="blob_upload"}`,
		`portcullis_http_response_bytes_total{route="manifest"}`,
		`portcullis_http_uploads_in_flight 0`,
		`portcullis_storage_action_seconds_bucket{op="write"`,
		`portcullis_storage_action_seconds_bucket{op="read"`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), "ops/app") {
		t.Error("/metrics carries a repository name: unbounded label")
	}

	logs := reg.Logs()
	if strings.Contains(logs, secret) || strings.Contains(logs, base64.StdEncoding.EncodeToString([]byte("alice:"+secret))) {
		t.Error("a credential reached the logs")
	}
	// Every line of that request, ours and distribution's, carries its id.
	var ours, theirs int
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if rec["request_id"] != "trace-me-42" {
			continue
		}
		if rec["component"] == "distribution" {
			theirs++
		} else {
			ours++
		}
	}
	if ours == 0 || theirs == 0 {
		t.Errorf("lines with the request id: ours %d, distribution's %d; want both", ours, theirs)
	}
}
