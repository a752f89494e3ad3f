package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// patch sends one chunk of an upload and returns the status and the next
// location.
func patch(t *testing.T, reg *Registry, loc string, start int, chunk []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(chunk))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", start, start+len(chunk)-1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	next := resp.Header.Get("Location")
	if next != "" && !strings.HasPrefix(next, "http") {
		next = reg.URL() + next
	}
	return resp.StatusCode, next
}

// readyzWithin polls /readyz, as an orchestrator's probe does, until it
// answers want or the time is up, and returns the last status (0 when the
// request itself failed).
func readyzWithin(reg *Registry, want int, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		status := 0
		if resp, err := http.Get(reg.URL() + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		if status == want || time.Now().After(deadline) {
			return status
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func getBlob(reg *Registry, repo string, d digest.Digest) (int, []byte, error) {
	resp, err := http.Get(reg.URL() + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestS3OutageDuringChunkedUpload stops MinIO between two chunks of an
// upload: the client gets an error it can retry, nothing half-written
// becomes visible, readiness turns false and back, and once MinIO is back
// the same push completes and pulls byte-identical.
func TestS3OutageDuringChunkedUpload(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	srv := miniotest.Start(t)
	reg := startRegistry(t, s3Options(srv, t, "http:\n  shutdownGrace: 5s\n"))
	data := make([]byte, 12<<20)
	_, _ = rand.Read(data)
	d := digest.FromBytes(data)

	loc := reg.startUpload(t, "faults/app")
	status, loc := patch(t, reg, loc, 0, data[:6<<20])
	if status != http.StatusAccepted {
		t.Fatalf("first chunk: %d", status)
	}
	srv.Stop()
	status, _ = patch(t, reg, loc, 6<<20, data[6<<20:])
	if status >= 200 && status < 300 {
		t.Fatalf("chunk accepted while storage is down: %d", status)
	}
	if status != 0 && status < 500 {
		t.Errorf("chunk during outage: %d, want a retryable 5xx", status)
	}
	if got := readyzWithin(reg, http.StatusServiceUnavailable, 15*time.Second); got != http.StatusServiceUnavailable {
		t.Errorf("readyz during outage: %d", got)
	}
	if status, _, _ := getBlob(reg, "faults/app", d); status >= 200 && status < 300 {
		t.Errorf("half-written blob served during outage: %d", status)
	}

	srv.Restart()
	if got := readyzWithin(reg, http.StatusOK, 15*time.Second); got != http.StatusOK {
		t.Errorf("readyz after MinIO returned: %d", got)
	}
	if status, _, _ := getBlob(reg, "faults/app", d); status != http.StatusNotFound {
		t.Errorf("broken upload visible after recovery: %d", status)
	}
	// The push, redone as a client does, completes.
	loc = reg.startUpload(t, "faults/app")
	status, loc = patch(t, reg, loc, 0, data[:6<<20])
	if status != http.StatusAccepted {
		t.Fatalf("retry first chunk: %d", status)
	}
	status, loc = patch(t, reg, loc, 6<<20, data[6<<20:])
	if status != http.StatusAccepted {
		t.Fatalf("retry second chunk: %d", status)
	}
	req, _ := http.NewRequest(http.MethodPut, loc+"&digest="+d.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("complete upload: %v %v", resp, err)
	}
	resp.Body.Close()
	status, got, err := getBlob(reg, "faults/app", d)
	if status != http.StatusOK || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pull after recovery: %d, %v, identical=%v", status, err, bytes.Equal(got, data))
	}

	// A real client's push across an outage: fails, then succeeds on retry.
	img, _ := random.Image(3<<20, 2)
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	srv.Stop()
	if out, err := runErr(nil, crane, "push", "--insecure", tarPath, reg.Addr+"/faults/crane:v1"); err == nil {
		t.Errorf("crane push succeeded with storage down: %s", out)
	}
	srv.Restart()
	run(t, nil, crane, "push", "--insecure", tarPath, reg.Addr+"/faults/crane:v1")
	if got := remoteDigest(t, reg.Addr+"/faults/crane:v1"); got != imageDigest(t, img) {
		t.Errorf("after retry: %s, want %s", got, imageDigest(t, img))
	}
}

// TestS3OutageDuringPull stops MinIO while a large blob is being read: the
// client never gets a complete-looking response with wrong content.
func TestS3OutageDuringPull(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	reg := startRegistry(t, s3Options(srv, t, "http:\n  shutdownGrace: 5s\n"))
	data := make([]byte, 96<<20)
	_, _ = rand.Read(data)
	d := digest.FromBytes(data)
	loc := reg.startUpload(t, "faults/pull")
	req, _ := http.NewRequest(http.MethodPut, loc+"&digest="+d.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()

	resp, err = http.Get(reg.URL() + "/v2/faults/pull/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	rest, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := append(first, rest...)
	if readErr == nil && !bytes.Equal(got, data) {
		t.Fatalf("outage mid-pull gave a complete response with wrong content (%d bytes)", len(got))
	}
	if readErr == nil {
		t.Logf("the whole blob was already in flight before MinIO stopped")
	}

	srv.Restart()
	status, again, err := getBlob(reg, "faults/pull", d)
	if status != http.StatusOK || err != nil || !bytes.Equal(again, data) {
		t.Fatalf("pull after recovery: %d %v identical=%v", status, err, bytes.Equal(again, data))
	}
}

// TestRegistryRestartMidUpload restarts the registry between two chunks of
// an upload: the upload resumes from where it stood.
func TestRegistryRestartMidUpload(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			o := b.options(t, "")
			o.dataDir = t.TempDir()
			reg := startRegistry(t, o)
			data := make([]byte, 11<<20)
			_, _ = rand.Read(data)
			d := digest.FromBytes(data)
			loc := reg.startUpload(t, "restart/up")
			status, loc := patch(t, reg, loc, 0, data[:7<<20])
			if status != http.StatusAccepted {
				t.Fatalf("first chunk: %d", status)
			}
			if err := reg.Stop(); err != nil {
				t.Fatal(err)
			}
			reg2 := startRegistry(t, o)
			loc = strings.Replace(loc, reg.Addr, reg2.Addr, 1)
			status, loc = patch(t, reg2, loc, 7<<20, data[7<<20:])
			if status != http.StatusAccepted {
				t.Fatalf("second chunk after restart: %d", status)
			}
			req, _ := http.NewRequest(http.MethodPut, loc+"&digest="+d.String(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusCreated {
				t.Fatalf("complete after restart: %v %v", resp, err)
			}
			resp.Body.Close()
			status, got, err := getBlob(reg2, "restart/up", d)
			if status != http.StatusOK || err != nil || !bytes.Equal(got, data) {
				t.Fatalf("pull: %d %v identical=%v", status, err, bytes.Equal(got, data))
			}
		})
	}
}

// TestS3StartupErrors: a missing bucket, wrong credentials or an unreachable
// endpoint stop start-up with one clear line that never shows the secret.
func TestS3StartupErrors(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	cases := []struct {
		name, endpoint, bucket, access, secret, want string
	}{
		{"missing bucket", srv.Endpoint, "no-such-bucket", srv.AccessKey, srv.SecretKey, "bucket not found"},
		{"wrong secret", srv.Endpoint, bucket, srv.AccessKey, "wrong-secret-value-123", "credentials rejected"},
		{"unreachable", "http://" + freeAddr(t), bucket, srv.AccessKey, srv.SecretKey, "unreachable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := filepath.Join(t.TempDir(), "config.yml")
			writeFile(t, cfg, fmt.Sprintf("version: 1\nstorage:\n  s3:\n    endpoint: %s\n    region: us-east-1\n    bucket: %s\n", c.endpoint, c.bucket))
			out, err := runErr([]string{"AWS_ACCESS_KEY_ID=" + c.access, "AWS_SECRET_ACCESS_KEY=" + c.secret},
				registryBin, "serve", "--config", cfg, "--addr", freeAddr(t), "--data", t.TempDir())
			if err == nil {
				t.Fatalf("start-up succeeded")
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, c.want) || !strings.HasPrefix(last, "registry: storage.s3:") {
				t.Errorf("last line %q, want one line naming %q\n%s", last, c.want, out)
			}
			if strings.Contains(out, c.secret) {
				t.Errorf("the secret reached the output: %s", out)
			}
		})
	}
}
