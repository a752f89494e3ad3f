package app

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/front"
	"github.com/portcullis/portcullis/storage/miniotest"
)

// blobHeaders are the headers of a blob read that clients look at.
var blobHeaders = []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest",
	"Etag", "Cache-Control", "Last-Modified", "Docker-Distribution-API-Version"}

func serveBlob(h http.Handler, method, path string, header http.Header) response {
	return serveHeaders(h, method, path, header, blobHeaders)
}

// TestBlobReadsMatchDistribution: every blob GET and HEAD gets the status,
// headers and body distribution's handler gives for the same request: a
// layer and a config of the repository, with and without Range, If-None-Match
// and If-Range; a blob only another repository links, a manifest read as a
// blob, an unknown blob, a sha512 digest. And the front handler serves the
// repository's blobs itself, from their files.
func TestBlobReadsMatchDistribution(t *testing.T) {
	t.Parallel()
	t.Run("filesystem", func(t *testing.T) {
		t.Parallel()
		testBlobReadsMatchDistribution(t, config.Default())
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		testBlobReadsMatchDistribution(t, s3Config(t, miniotest.Start(t)))
	})
}

// s3Config is the default configuration with storage in a new bucket of
// srv.
func s3Config(t *testing.T, srv *miniotest.Server) *config.Config {
	t.Helper()
	dir := t.TempDir()
	access, secret := filepath.Join(dir, "access"), filepath.Join(dir, "secret")
	for f, v := range map[string]string{access: srv.AccessKey, secret: srv.SecretKey} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.Storage.S3 = &config.S3{Endpoint: srv.Endpoint, Region: "us-east-1", Bucket: srv.NewBucket(t),
		AccessKeyFile: access, SecretKeyFile: secret}
	return cfg
}

func testBlobReadsMatchDistribution(t *testing.T, cfg *config.Config) {
	a, host := servedApp(t, cfg, slog.New(slog.DiscardHandler))
	var blobs, other []string
	var manifest string
	for _, repo := range []string{"team/app", "team/other"} {
		img, err := random.Image(1000, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(host+"/"+repo+":v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		ld, err := layers[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		cd, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if repo == "team/app" {
			blobs = []string{ld.String(), cd.String()}
			md, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			manifest = md.String()
		} else {
			other = []string{ld.String()}
		}
	}

	headers := map[string]http.Header{
		"none":           {},
		"range":          {"Range": {"bytes=10-99"}},
		"open range":     {"Range": {"bytes=900-"}},
		"suffix range":   {"Range": {"bytes=-7"}},
		"whole range":    {"Range": {"bytes=0-"}},
		"past the end":   {"Range": {"bytes=5000-6000"}},
		"bad range":      {"Range": {"bytes=x-y"}},
		"if-range match": {"Range": {"bytes=0-9"}, "If-Range": {`"` + blobs[0] + `"`}},
		"if-range other": {"Range": {"bytes=0-9"}, "If-Range": {`"` + blobs[1] + `"`}},
		"if-none-match":  {"If-None-Match": {`"` + blobs[0] + `"`}},
	}
	digests := append(append(blobs, other...), manifest, "sha256:"+strings.Repeat("0", 64),
		"sha512:"+strings.Repeat("0", 128))
	for _, d := range digests {
		for hname, header := range headers {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				path := "/v2/team/app/blobs/" + d
				want := serveBlob(a.dist, method, path, header.Clone())
				got := serveBlob(a.handler, method, path, header.Clone())
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s %s, %s (-distribution +ours):\n%s", method, d, hname, diff)
				}
			}
		}
	}

	// The repository's blobs are served by the front handler, without the
	// core, and so is the 404 of a blob the repository does not link (as
	// the core answers it: checked above); everything else goes to the
	// core.
	teapot := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h, err := front.New(teapot, a.core.refs, a.core.repos, a.driver, front.Options{Blobs: a.core.blobs})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(blobs, other[0], manifest, "sha512:"+strings.Repeat("0", 128)) {
		got := serveBlob(h, http.MethodGet, "/v2/team/app/blobs/"+d, http.Header{})
		want := serveBlob(a.dist, http.MethodGet, "/v2/team/app/blobs/"+d, http.Header{})
		canonical := strings.HasPrefix(d, "sha256:")
		switch {
		case want.Status == http.StatusOK && got.Status != http.StatusOK:
			t.Errorf("GET %s: %d from the front handler, want it served by it", d, got.Status)
		case want.Status == http.StatusNotFound && canonical && got.Status != http.StatusNotFound:
			t.Errorf("GET %s: %d from the front handler, want its own 404", d, got.Status)
		case want.Status != http.StatusOK && !canonical && got.Status != http.StatusTeapot:
			t.Errorf("GET %s: %d from the front handler, want it left to the core", d, got.Status)
		}
	}
}

// TestBlobReader: the S3 blob reader asks the driver at its first Read, from
// the offset it was sought to, asks again only after a Seek elsewhere, and
// ends at the blob's size; a missing object ends the read, as distribution's
// file reader does.
func TestBlobReader(t *testing.T) {
	t.Parallel()
	data := "0123456789abcdefghij"
	var opens []int64
	open := func(offset int64) (io.ReadCloser, error) {
		opens = append(opens, offset)
		if offset > int64(len(data)) {
			return nil, storagedriver.PathNotFoundError{Path: "p"}
		}
		return io.NopCloser(strings.NewReader(data[offset:])), nil
	}
	r := &blobReader{size: int64(len(data)), open: open}
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != 20 {
		t.Fatalf("Seek(0, end) = %d, %v; want 20", end, err)
	}
	if _, err := r.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if len(opens) != 0 {
		t.Fatalf("driver asked at %v before any Read", opens)
	}
	got, err := io.ReadAll(io.LimitReader(r, 5))
	if err != nil || string(got) != "56789" {
		t.Fatalf("read from 5: %q, %v", got, err)
	}
	if pos, err := r.Seek(0, io.SeekCurrent); err != nil || pos != 10 {
		t.Fatalf("Seek(0, current) = %d, %v; want 10", pos, err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != data[10:] {
		t.Fatalf("rest: %q, %v", rest, err)
	}
	if _, err := r.Seek(-3, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(r)
	if err != nil || string(tail) != "hij" {
		t.Fatalf("tail: %q, %v", tail, err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("Seek(-1, start): no error")
	}
	if diff := cmp.Diff([]int64{5, 17}, opens); diff != "" {
		t.Errorf("driver asked at offsets (-want +got):\n%s", diff)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	gone := &blobReader{size: 30, open: open}
	if _, err := gone.Seek(25, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := gone.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Errorf("read of a missing object: %d, %v; want 0, EOF", n, err)
	}
}
