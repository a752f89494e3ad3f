package storage

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// breakingS3 serves one object and cuts the connection in the middle of the
// body of its first breaks answers; a request with If-Match for another ETag
// gets 412, as S3 answers for an object replaced since.
type breakingS3 struct {
	body     []byte
	etag     string
	breaks   int32
	requests atomic.Int32
	ranges   []string
	ifMatch  []string
}

func (s *breakingS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.ifMatch = append(s.ifMatch, r.Header.Get("If-Match"))
	if m := r.Header.Get("If-Match"); m != "" && strings.Trim(m, `"`) != s.etag {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusPreconditionFailed)
		fmt.Fprint(w, `<Error><Code>PreconditionFailed</Code><Message>changed</Message></Error>`)
		return
	}
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
	}
	part := s.body[start:]
	h := w.Header()
	h.Set("ETag", `"`+s.etag+`"`)
	h.Set("Last-Modified", "Mon, 02 Jan 2026 15:04:05 GMT")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(part)))
	status := http.StatusOK
	if start > 0 {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(s.body)-1, len(s.body)))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if n > s.breaks {
		_, _ = w.Write(part)
		return
	}
	_, _ = w.Write(part[:len(part)/2])
	w.(http.Flusher).Flush()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

// openBreaking serves s3 and opens a Reader of its object through the driver.
func openBreaking(t *testing.T, s3 *breakingS3) io.ReadCloser {
	t.Helper()
	srv := httptest.NewServer(s3)
	t.Cleanup(srv.Close)
	rc, err := fakeDriver(t, srv).Reader(t.Context(), "/blob", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

func fakeDriver(t *testing.T, srv *httptest.Server) *driver {
	t.Helper()
	client, err := minio.New(strings.TrimPrefix(srv.URL, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4("access", "secret", ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &driver{client: client, probe: client, bucket: "bucket", endpoint: srv.URL, commits: newRecent[commit](time.Now), hashWrites: newRecent[[]byte](time.Now), stated: newRecent[alias](time.Now), writers: newOpenWriters(time.Now), held: newHeldCommits(time.Now)}
}

// TestReaderResumes: a connection that breaks in the middle of an object's body is picked
// up where it broke, on condition that the object is unchanged; the caller reads the whole
// object once.
func TestReaderResumes(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	s3 := &breakingS3{body: body, etag: "v1", breaks: 2}
	rc := openBreaking(t, s3)
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read: %v (requests %v)", err, s3.ranges)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes, want the %d of the object", len(got), len(body))
	}
	if n := s3.requests.Load(); n != 3 {
		t.Fatalf("%d requests, want 3 (two broken, one whole rest)", n)
	}
	if s3.ranges[1] == "" || s3.ifMatch[1] == "" {
		t.Fatalf("resumed without Range/If-Match: ranges %q, if-match %q", s3.ranges, s3.ifMatch)
	}
}

// TestReaderResumeRefusesChangedObject: when the object changed since the read began, the
// read fails rather than splicing two objects.
func TestReaderResumeRefusesChangedObject(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("x"), 1<<20)
	s3 := &breakingS3{body: body, etag: "v1", breaks: 1}
	rc := openBreaking(t, s3)
	s3.etag = "v2" // replaced after the first answer
	got, err := io.ReadAll(rc)
	if err == nil {
		t.Fatalf("read %d bytes of a changed object without an error", len(got))
	}
	if len(got) >= len(body) {
		t.Fatalf("read %d bytes: a complete-looking body", len(got))
	}
}

// TestReaderGivesUp: a connection that keeps breaking ends the read with an error after
// maxResumes attempts.
func TestReaderGivesUp(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("y"), 1<<20)
	s3 := &breakingS3{body: body, etag: "v1", breaks: 100}
	rc := openBreaking(t, s3)
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("a connection that always breaks read without an error")
	}
	if n := s3.requests.Load(); n != maxResumes+1 {
		t.Fatalf("%d requests, want %d", n, maxResumes+1)
	}
}

func TestDeleteFiles(t *testing.T) {
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{Prefix: "batch"})
	ctx := t.Context()
	var paths []string
	for i := range 1500 {
		p := fmt.Sprintf("/blobs/%04d/data", i)
		if err := d.PutContent(ctx, p, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			paths = append(paths, p)
		}
	}
	paths = append(paths, "/blobs/never/data")
	if err := d.DeleteFiles(ctx, paths); err != nil {
		t.Fatalf("DeleteFiles: %v", err)
	}
	left, err := d.List(ctx, "/blobs")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 750 {
		t.Errorf("%d directories left, want 750", len(left))
	}
	if _, err := d.Stat(ctx, "/blobs/0001/data"); err != nil {
		t.Errorf("a file not named was deleted: %v", err)
	}
	if err := d.DeleteFiles(ctx, []string{"relative/path"}); err == nil {
		t.Error("an invalid path was accepted")
	}
}
