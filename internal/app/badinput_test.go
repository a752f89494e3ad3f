package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/testenv"
)

type ociErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// do sends a request and returns status, OCI error code and body.
func do(t *testing.T, method, url, contentType string, body []byte, headers ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var oe ociErrors
	code := ""
	if json.Unmarshal(b, &oe) == nil && len(oe.Errors) > 0 {
		code = oe.Errors[0].Code
		if oe.Errors[0].Message == "" {
			t.Errorf("%s %s: error %s has no message", method, url, code)
		}
	}
	return resp.StatusCode, code, resp.Header
}

const ociManifest = "application/vnd.oci.image.manifest.v1+json"

func TestBadInput(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	base := reg.URL + "/v2/"
	emptyJSON := []byte("{}")
	emptyDigest := digest.FromBytes(emptyJSON)
	validManifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[]}`, ociManifest, emptyDigest))
	big := bytes.Repeat([]byte(" "), 4<<20+1)

	tests := []struct {
		name, method, path, contentType string
		body                            []byte
		headers                         []string
		wantStatus                      int
		wantCode                        string
	}{
		{name: "upper-case name", method: "GET", path: "UPPER/manifests/latest", wantStatus: 400, wantCode: "NAME_INVALID"},
		{name: "name too long", method: "GET", path: strings.Repeat("n", 256) + "/tags/list", wantStatus: 400, wantCode: "NAME_INVALID"},
		{name: "bad tag", method: "PUT", path: "a/manifests/bad!tag", contentType: ociManifest, body: validManifest, wantStatus: 400, wantCode: "TAG_INVALID"},
		{name: "tag too long", method: "GET", path: "a/manifests/" + strings.Repeat("t", 129), wantStatus: 400, wantCode: "TAG_INVALID"},
		{name: "bad digest", method: "GET", path: "a/blobs/sha256:xyz", wantStatus: 400, wantCode: "DIGEST_INVALID"},
		{name: "unknown algorithm", method: "GET", path: "a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", wantStatus: 400, wantCode: "DIGEST_INVALID"},
		{name: "bad referrers digest", method: "GET", path: "a/referrers/latest", wantStatus: 400, wantCode: "DIGEST_INVALID"},
		{name: "unknown endpoint", method: "GET", path: "a/nothing-here", wantStatus: 404, wantCode: "UNSUPPORTED"},
		{name: "manifest over 4 MiB", method: "PUT", path: "a/manifests/big", contentType: ociManifest, body: big, wantStatus: 413, wantCode: "MANIFEST_INVALID"},
		{name: "malformed JSON", method: "PUT", path: "a/manifests/t", contentType: ociManifest, body: []byte(`{"schemaVersion":2,`), wantStatus: 400, wantCode: "MANIFEST_INVALID"},
		{name: "wrong content type", method: "PUT", path: "a/manifests/t", contentType: "text/plain", body: validManifest, wantStatus: 400, wantCode: "MANIFEST_INVALID"},
		{name: "missing blobs", method: "PUT", path: "a/manifests/t", contentType: ociManifest, body: validManifest, wantStatus: 400, wantCode: "MANIFEST_BLOB_UNKNOWN"},
		{name: "manifest digest mismatch", method: "PUT", path: "a/manifests/" + digest.FromString("x").String(), contentType: ociManifest, body: validManifest, wantStatus: 400, wantCode: "DIGEST_INVALID"},
		{name: "unknown manifest", method: "GET", path: "a/manifests/nope", headers: []string{"Accept", ociManifest}, wantStatus: 404, wantCode: "MANIFEST_UNKNOWN"},
		{name: "unknown blob", method: "GET", path: "a/blobs/" + emptyDigest.String(), wantStatus: 404, wantCode: "BLOB_UNKNOWN"},
		{name: "unknown upload", method: "PATCH", path: "a/blobs/uploads/nope", body: []byte("x"), wantStatus: 404, wantCode: "BLOB_UPLOAD_INVALID"},
		{name: "bad page size", method: "GET", path: "a/tags/list?n=-1", wantStatus: 400, wantCode: "PAGINATION_NUMBER_INVALID"},
		// The core would put these in a storage path and answer 500 with it.
		{name: "catalog marker too long", method: "GET", path: "_catalog?last=" + strings.Repeat("x", 300), wantStatus: 400, wantCode: "NAME_INVALID"},
		{name: "tags marker too long", method: "GET", path: "a/tags/list?last=" + strings.Repeat("x", 300), wantStatus: 400, wantCode: "TAG_INVALID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, _ := do(t, tt.method, base+tt.path, tt.contentType, tt.body, tt.headers...)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("%s %s: got %d %s, want %d %s", tt.method, tt.path, status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	// Nothing above stored anything: no repository exists.
	status, _, _ := do(t, "GET", base+"_catalog", "", nil)
	if status != 200 {
		t.Fatalf("catalog: %d", status)
	}
	resp, err := http.Get(base + "_catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cat struct{ Repositories []string }
	_ = json.NewDecoder(resp.Body).Decode(&cat)
	if len(cat.Repositories) != 0 {
		t.Errorf("catalog after rejected requests = %v, want empty", cat.Repositories)
	}
}

// TestAPIBadInput checks the /api/v1/ answers of a registry without
// policies: each an OCI error with its status.
func TestAPIBadInput(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	image := reg.URL + "/api/v1/repositories/a/manifests/" + digest.FromString("x").String()
	tests := []struct {
		name, method, url string
		wantStatus        int
		wantCode          string
	}{
		{name: "verdict without policies", method: "GET", url: image + "/verdict", wantStatus: 404, wantCode: "NAME_UNKNOWN"},
		{name: "no report", method: "GET", url: image + "/vulnerabilities", wantStatus: 404, wantCode: "MANIFEST_UNKNOWN"},
		{name: "no sbom", method: "GET", url: image + "/sbom", wantStatus: 404, wantCode: "MANIFEST_UNKNOWN"},
		{name: "unknown document", method: "GET", url: image + "/logs", wantStatus: 404, wantCode: "UNSUPPORTED"},
		{name: "POST", method: "POST", url: image + "/verdict", wantStatus: 404, wantCode: "UNSUPPORTED"},
		{name: "bad digest", method: "GET", url: reg.URL + "/api/v1/repositories/a/manifests/sha256:1/verdict", wantStatus: 404, wantCode: "UNSUPPORTED"},
		{name: "unknown route", method: "GET", url: reg.URL + "/api/v1/nothing-here", wantStatus: 404, wantCode: "UNSUPPORTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, _ := do(t, tt.method, tt.url, "", nil)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("%s %s: got %d %s, want %d %s", tt.method, tt.url, status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	// A digest the repository does not have is told apart from an image
	// not scanned yet.
	for _, what := range []string{"vulnerabilities", "sbom"} {
		resp, err := http.Get(image + "/" + what)
		if err != nil {
			t.Fatal(err)
		}
		var oe ociErrors
		err = json.NewDecoder(resp.Body).Decode(&oe)
		resp.Body.Close()
		want := "manifest " + digest.FromString("x").String() + " is not in a"
		if err != nil || len(oe.Errors) != 1 || oe.Errors[0].Message != want {
			t.Errorf("GET .../%s: %+v (%v), want the message %q", what, oe, err, want)
		}
	}
	// An image that is there but not scanned has no report yet.
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, reg.Host+"/a:v1"), img); err != nil {
		t.Fatalf("push: %v", err)
	}
	d, _ := img.Digest()
	resp, err := http.Get(reg.URL + "/api/v1/repositories/a/manifests/" + d.String() + "/vulnerabilities")
	if err != nil {
		t.Fatal(err)
	}
	var oe ociErrors
	err = json.NewDecoder(resp.Body).Decode(&oe)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 404 || len(oe.Errors) != 1 || oe.Errors[0].Code != "MANIFEST_UNKNOWN" ||
		!strings.HasPrefix(oe.Errors[0].Message, "no vulnerabilities for a@"+d.String()+" yet") {
		t.Errorf("GET .../vulnerabilities of a pushed image: %d %+v (%v), want no report yet", resp.StatusCode, oe, err)
	}
}

func TestUploadErrors(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	data := []byte("0123456789abcdefghij")
	good := digest.FromBytes(data)

	t.Run("digest mismatch stores nothing", func(t *testing.T) {
		loc := startUpload(t, reg.URL, "up/mismatch")
		status, code, _ := do(t, "PUT", loc+"&digest="+digest.FromString("other").String(), "application/octet-stream", data)
		if status != 400 || code != "DIGEST_INVALID" {
			t.Errorf("PUT: %d %s, want 400 DIGEST_INVALID", status, code)
		}
		for _, d := range []digest.Digest{good, digest.FromString("other")} {
			if status, _, _ := do(t, "HEAD", reg.URL+"/v2/up/mismatch/blobs/"+d.String(), "", nil); status != 404 {
				t.Errorf("HEAD %s after mismatch: %d, want 404", d, status)
			}
		}
	})

	t.Run("out-of-order chunk", func(t *testing.T) {
		loc := startUpload(t, reg.URL, "up/range")
		status, _, _ := do(t, "PATCH", loc, "application/octet-stream", data[10:], "Content-Range", "10-19")
		if status != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("PATCH 10-19 first: %d, want 416", status)
		}
		// A Content-Range that is no range is the client's error, not a 500.
		status, code, _ := do(t, "PATCH", loc, "application/octet-stream", data[:10], "Content-Range", "bogus")
		if status != http.StatusRequestedRangeNotSatisfiable || code != "RANGE_INVALID" {
			t.Errorf("PATCH with Content-Range bogus: %d %s, want 416 RANGE_INVALID", status, code)
		}
		// The session is still usable from the start.
		status, _, h := do(t, "PATCH", loc, "application/octet-stream", data[:10], "Content-Range", "0-9")
		if status != http.StatusAccepted || h.Get("Range") != "0-9" {
			t.Fatalf("PATCH 0-9: %d Range %q", status, h.Get("Range"))
		}
		next := h.Get("Location")
		if !strings.HasPrefix(next, "http") {
			next = reg.URL + next
		}
		status, _, _ = do(t, "PUT", next+"&digest="+good.String(), "application/octet-stream", data[10:], "Content-Range", "10-19")
		if status != http.StatusCreated {
			t.Errorf("final PUT: %d", status)
		}
	})

	t.Run("client disconnects mid-upload", func(t *testing.T) {
		loc := startUpload(t, reg.URL, "up/cut")
		// Announce 1 MiB, send 1 KiB, hang up.
		conn, err := net.Dial("tcp", reg.Host)
		if err != nil {
			t.Fatal(err)
		}
		path := strings.TrimPrefix(loc, reg.URL)
		fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n", path, reg.Host)
		_, _ = conn.Write(bytes.Repeat([]byte("x"), 1024))
		conn.Close()

		// The server keeps serving, the blob is not visible, and the
		// upload can still be completed from what it holds.
		if status, _, _ := do(t, "GET", reg.URL+"/v2/", "", nil); status != 200 {
			t.Fatalf("GET /v2/ after disconnect: %d", status)
		}
		if status, _, _ := do(t, "HEAD", reg.URL+"/v2/up/cut/blobs/"+good.String(), "", nil); status != 404 {
			t.Errorf("blob visible after a broken upload: %d", status)
		}
		status, _, h := do(t, "GET", loc, "", nil)
		if status != http.StatusNoContent && status != http.StatusNotFound {
			t.Errorf("upload status after disconnect: %d", status)
		}
		if status == http.StatusNoContent && h.Get("Range") == "" {
			t.Errorf("upload status without Range header")
		}
		// A new upload of the real content succeeds.
		loc2 := startUpload(t, reg.URL, "up/cut")
		if status, _, _ := do(t, "PUT", loc2+"&digest="+good.String(), "application/octet-stream", data); status != http.StatusCreated {
			t.Errorf("retry upload: %d", status)
		}
	})
}

// TestIncompleteIndex: an index whose children are missing is refused by
// default and accepted when the configuration allows it.
func TestIncompleteIndex(t *testing.T) {
	t.Parallel()
	child := digest.FromString("missing child")
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":%q,"digest":%q,"size":10}]}`, ociManifest, child))
	for _, allow := range []bool{false, true} {
		reg := testenv.Start(t, func(c *config.Config) { c.Validation.AllowIncompleteIndexes = allow })
		status, code, _ := do(t, "PUT", reg.URL+"/v2/idx/app/manifests/v1", "application/vnd.oci.image.index.v1+json", index)
		switch {
		case !allow && (status != 400 || code != "MANIFEST_BLOB_UNKNOWN"):
			t.Errorf("default: %d %s, want 400 MANIFEST_BLOB_UNKNOWN", status, code)
		case allow && status != 201:
			t.Errorf("allowIncompleteIndexes: %d %s, want 201", status, code)
		}
	}
}
