package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	regstorage "github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/reference"
	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// s3Proxy stands in front of a real MinIO: it records each request as
// "METHOD key" (a listing as "LIST prefix"), refuses those fail selects and
// denies those deny selects, as MinIO does a write that races the removal of
// its directory.
type s3Proxy struct {
	proxy *httputil.ReverseProxy
	fail  atomic.Pointer[func(r *http.Request) bool]
	deny  atomic.Pointer[func(r *http.Request) bool]

	mu       sync.Mutex
	requests []string
}

func startS3Proxy(t *testing.T, srv *miniotest.Server) (*s3Proxy, string) {
	t.Helper()
	p := &s3Proxy{proxy: srv.ReverseProxy(t)}
	hs := httptest.NewServer(p)
	t.Cleanup(hs.Close)
	return p, hs.URL
}

func (p *s3Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests = append(p.requests, miniotest.Describe(r))
	p.mu.Unlock()
	if f := p.fail.Load(); f != nil && (*f)(r) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `<Error><Code>InvalidRequest</Code><Message>refused by the test</Message></Error>`)
		return
	}
	if f := p.deny.Load(); f != nil && (*f)(r) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<Error><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>`)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

// take returns the requests recorded since the last take, with the test's
// key prefix and upload ID replaced by short names.
func (p *s3Proxy) take(prefix, id string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, len(p.requests))
	for i, r := range p.requests {
		r = strings.ReplaceAll(r, prefix+"/~pending/docker/registry/v2/", "~pending/")
		r = strings.ReplaceAll(r, prefix+"/docker/registry/v2/", "")
		if id != "" {
			r = strings.ReplaceAll(r, id, "ID")
		}
		out[i] = r
	}
	p.requests = nil
	return out
}

// uploadRegistry returns distribution's storage over a Driver that reaches
// srv through a recording proxy.
func uploadRegistry(t *testing.T, srv *miniotest.Server) (distribution.BlobStore, *s3Proxy, string) {
	t.Helper()
	bucket := srv.NewBucket(t)
	d, proxy := proxiedDriver(t, srv, Options{Bucket: bucket, Prefix: "p"})
	return repoBlobs(t, d), proxy, bucket
}

// repoBlobs returns the blob store of repository "r" in distribution's
// storage over d.
func repoBlobs(t *testing.T, d *Driver) distribution.BlobStore {
	t.Helper()
	reg, err := regstorage.NewRegistry(t.Context(), d, regstorage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	name, err := reference.WithName("r")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := reg.Repository(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return repo.Blobs(t.Context())
}

// requestContext returns a context that carries a request's record, as the
// registry gives each request (WithRequest).
func requestContext(base context.Context) context.Context {
	ctx, _ := WithRequest(base)
	return ctx
}

// pushBlob uploads content as distribution's handlers serve a client's
// POST, PATCH with the content, and PUT ?digest= without a body: each
// request, with a context of its own that carries the request's record as
// the registry's (WithRequest) and the offset of the client's upload
// state (UploadOffset), resumes the upload, copies the body with io.Copy
// and closes the upload (the PATCH twice), ignoring the error of Close as
// distribution's blobUploadResponse does. It returns the upload's ID.
func pushBlob(base context.Context, t *testing.T, blobs distribution.BlobStore, content []byte, afterPost func()) string {
	t.Helper()
	request := func() context.Context { return requestContext(base) }
	ctx := request()
	up, err := blobs.Create(ctx) // POST
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	_ = up.Close()
	id := up.ID()
	afterPost()

	ctx = request()
	UploadOffset(ctx, id, 0)
	up, err = blobs.Resume(ctx, id) // PATCH
	if err != nil {
		t.Fatalf("PATCH: resume the upload the POST answered 202 for: %v", err)
	}
	if up.Size() != 0 {
		t.Fatalf("PATCH: upload resumed at %d, want 0", up.Size())
	}
	if _, err := io.Copy(up, bytes.NewReader(content)); err != nil {
		t.Fatalf("PATCH: %v", err)
	}
	_ = up.Close() // blobUploadResponse
	_ = up.Close() // closeResources

	ctx = request()
	UploadOffset(ctx, id, int64(len(content)))
	up, err = blobs.Resume(ctx, id) // PUT
	if err != nil {
		t.Fatalf("PUT: %v", err)
	}
	if up.Size() != int64(len(content)) {
		t.Fatalf("PUT: upload resumed at %d, want %d", up.Size(), len(content))
	}
	if _, err := io.Copy(up, http.NoBody); err != nil {
		t.Fatalf("PUT: %v", err)
	}
	dgst := digest.FromBytes(content)
	if _, err := up.Commit(ctx, v1.Descriptor{Digest: dgst}); err != nil {
		t.Fatalf("PUT: commit: %v", err)
	}
	got, err := blobs.Get(ctx, dgst)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("blob after the push: %d bytes, %v; want the %d bytes pushed", len(got), err, len(content))
	}
	return id
}

// TestUploadAfterLostWriterState: the POST of an upload stores no writer
// state that its PATCH needs. Before, the POST's Close stored an empty
// pending tail; distribution ignores that error, answered 202, and when the
// write had failed the PATCH answered 500 "Path not found …/data".
func TestUploadAfterLostWriterState(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	blobs, proxy, _ := uploadRegistry(t, srv)
	refusePending := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/"+pendingDir+"/")
	}
	// The POST's writer state cannot be stored; the PATCH comes after.
	proxy.fail.Store(&refusePending)
	pushBlob(t.Context(), t, blobs, []byte("a small layer"), func() { proxy.fail.Store(nil) })
}

// TestUploadRequests lists the S3 requests of one small blob's upload as a
// client pushes it: HEAD (not found), POST, PATCH, PUT, then a read. The
// comments name each request that is gone; the test fails when one comes
// back.
func TestUploadRequests(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	blobs, proxy, bucket := uploadRegistry(t, srv)
	ctx := t.Context()
	content := []byte("a small layer")
	dgst := digest.FromBytes(content)
	blob := "blobs/sha256/" + dgst.Encoded()[:2] + "/" + dgst.Encoded() + "/data"
	link := "repositories/r/_layers/sha256/" + dgst.Encoded() + "/link"
	proxy.take("", "")

	if _, err := blobs.Stat(ctx, dgst); err != distribution.ErrBlobUnknown {
		t.Fatalf("Stat before the push = %v, want ErrBlobUnknown", err)
	}
	id := pushBlob(ctx, t, blobs, content, func() {})
	up := "repositories/r/_uploads/ID/"
	want := []string{
		// HEAD /v2/r/blobs/<digest>
		"GET " + link,
		// POST: the time the upload started. Not stored: the hash state
		// at offset 0 (never read back) and an empty pending tail.
		"PUT " + up + "startedat",
		// PATCH: the upload, the tail with the chunk, the hash state
		// after it, the upload's start and the hash states stored. Not
		// asked: the pending tail, which an upload the client says is
		// empty does not have (or has from a request that failed, whose
		// bytes come again). Not stored: the hash state's own object
		// (the upload's startedat, a moment old, shows its activity),
		// twice.
		"GET " + up + "startedat",
		"PUT ~pending/" + up + "data",
		// PUT: the upload's tail, which proves the upload exists and
		// carries its start and the hash state that checks the digest
		// after the commit. Not asked: startedat, a listing of hash
		// states and the state's own object.
		"GET ~pending/" + up + "data",
		// Commit: nothing. Not stored: the upload's data (held in memory
		// until the move) and the hash state again after the commit. Not
		// removed yet: the tail, which goes with the upload's directory.
		// Is the blob there? No listing for a blob's data, which is
		// never a directory. Not asked: the upload's data, twice (its
		// size is the commit's). Then the blob, put from memory: no COPY
		// of the upload's data, no DELETE of it.
		"HEAD " + blob,
		"PUT " + blob,
		"PUT " + link,
		// The upload's directory, and the tail in the same DELETE. Not
		// asked: its pending state (the commit knows its only writer's
		// tail), whether the directory is an object, what it holds (the
		// tail lists the hash states stored).
		"DELETE-MULTI ",
		// Get after the push: the link, the blob's size, its bytes.
		"GET " + link,
		"HEAD " + blob,
		"GET " + blob,
	}
	if got := proxy.take("p", id); !slices.Equal(got, want) {
		t.Errorf("requests of one small blob's push:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Errorf("writer state left: %v", left)
	}
	for obj := range srv.Client(t).ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: "p/docker/registry/v2/repositories/r/_uploads/", Recursive: true}) {
		t.Errorf("left in the uploads: %s %v", obj.Key, obj.Err)
	}
}

// TestLayoutPaths checks which paths the driver takes for files, upload data
// and hash states of distribution's layout; a wrong yes would make Stat hide
// a directory or drop a write.
func TestLayoutPaths(t *testing.T) {
	t.Parallel()
	const repos = "/docker/registry/v2/repositories/"
	const hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		path                     string
		file, uploadData, hashAt bool
	}{
		{path: "/docker/registry/v2/blobs/sha256/01/" + hex + "/data", file: true},
		{path: "/docker/registry/v2/blobs/sha256/01/" + hex},
		{path: repos + "r/_layers/sha256/" + hex + "/link", file: true},
		{path: repos + "r/_layers/sha256/" + hex},
		{path: repos + "r/_manifests/revisions/sha256/" + hex + "/link", file: true},
		{path: repos + "r/_manifests/tags/v1/current/link", file: true},
		{path: repos + "r/_manifests/tags/link"}, // a tag named link: a directory
		{path: repos + "r/_manifests/tags/_layers/current/link", file: true},
		{path: repos + "r/_manifests/tags/v1/index/sha256/" + hex + "/link", file: true},
		{path: repos + "r/current/link"}, // a repository named r/current/link
		{path: repos + "r/link"},
		{path: "/elsewhere/_layers/sha256/" + hex + "/link"},
		{path: repos + "a/b/_uploads/u-1/data", uploadData: true},
		{path: repos + "a/b/_uploads/u-1/startedat"},
		{path: repos + "a/b/_uploads/u-1/hashstates/sha256/42", hashAt: true},
		{path: repos + "a/b/_uploads/u-1/hashstates/sha256/x"},
		{path: "/c/_uploads/u-1/data"},
	}
	for _, tt := range tests {
		if got := isLayoutFile(tt.path); got != tt.file {
			t.Errorf("isLayoutFile(%s) = %v, want %v", tt.path, got, tt.file)
		}
		if got := isUploadData(tt.path); got != tt.uploadData {
			t.Errorf("isUploadData(%s) = %v, want %v", tt.path, got, tt.uploadData)
		}
		if got := isHashState(tt.path); got != tt.hashAt {
			t.Errorf("isHashState(%s) = %v, want %v", tt.path, got, tt.hashAt)
		}
	}
	if !isUploadDir(repos+"a/b/_uploads/u-1") || isUploadDir(repos+"a/b/_uploads/u-1/data") || isUploadDir(repos+"a/b/_uploads") {
		t.Error("isUploadDir takes the wrong paths")
	}
	data, alg, offset, ok := parseHashStatePath(repos + "a/_uploads/u/hashstates/sha256")
	if !ok || data != repos+"a/_uploads/u/data" || alg != "sha256" || offset != -1 {
		t.Errorf("parseHashStatePath of a directory = %q %q %d %v", data, alg, offset, ok)
	}
}

// TestWriteFailuresRecorded: a PATCH whose upload state cannot be stored
// must not be acknowledged. distribution ignores the error of the upload's
// Close; the request's record of write failures keeps it for the front
// handler, which answers 500 instead of 202.
func TestWriteFailuresRecorded(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	blobs, proxy, _ := uploadRegistry(t, srv)
	refuseTail := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/"+pendingDir+"/")
	}
	for _, refuse := range []bool{false, true} {
		up, err := blobs.Create(t.Context()) // POST
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		_ = up.Close()
		ctx, failures := WithRequest(t.Context())
		up, err = blobs.Resume(ctx, up.ID()) // PATCH
		if err != nil {
			t.Fatalf("PATCH: %v", err)
		}
		if _, err := io.Copy(up, bytes.NewReader([]byte("a small layer"))); err != nil {
			t.Fatalf("PATCH: %v", err)
		}
		if refuse {
			proxy.fail.Store(&refuseTail)
		}
		_ = up.Close() // blobUploadResponse ignores the error
		proxy.fail.Store(nil)
		err = failures(ctx)
		if refuse && err == nil {
			t.Fatal("the upload's state was not stored, and the request's write failures are empty")
		}
		if !refuse && err != nil {
			t.Fatalf("write failures of a PATCH that stored its state: %v", err)
		}
	}
}

// TestUploadAcrossReplicas: an upload whose requests land on two drivers
// over one bucket (POST and PUT on one, the PATCH on the other) completes,
// the PUT answering distribution's read of startedat from the pending tail
// the other driver stored; a tail without the start (an older driver's)
// sends the read to startedat; a cancelled upload is unknown to both.
func TestUploadAcrossReplicas(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	var stores [2]distribution.BlobStore
	for i := range stores {
		stores[i] = repoBlobs(t, newTestDriver(t, srv, Options{Bucket: bucket, Prefix: "p", Region: "us-east-1"}))
	}
	request := func() context.Context { return requestContext(t.Context()) }
	tailKey := func(id string) string {
		return "p/~pending/docker/registry/v2/repositories/r/_uploads/" + id + "/data"
	}
	client := srv.Client(t)
	hashStatesOf := func(id string) []string {
		var keys []string
		for obj := range client.ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{
			Prefix: "p/docker/registry/v2/repositories/r/_uploads/" + id + "/hashstates/", Recursive: true,
		}) {
			keys = append(keys, obj.Key)
		}
		return keys
	}
	for _, tt := range []struct{ oldTail, oldStart bool }{{}, {oldTail: true}, {oldStart: true}} {
		oldTail := tt.oldTail
		content := []byte(fmt.Sprintf("a layer in two chunks, %+v", tt))
		up, err := stores[0].Create(request()) // POST
		if err != nil {
			t.Fatal(err)
		}
		_ = up.Close()
		id := up.ID()
		if tt.oldStart {
			// An upload started an hour ago: each PATCH stores its hash
			// state, the upload's sign of activity.
			start := []byte(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
			_, err := client.PutObject(t.Context(), bucket, "p/docker/registry/v2/repositories/r/_uploads/"+id+"/startedat",
				bytes.NewReader(start), int64(len(start)), minio.PutObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, chunk := range [][]byte{content[:10], content[10:]} { // PATCH, PATCH
			up, err = stores[1-i].Resume(request(), id)
			if err != nil {
				t.Fatalf("PATCH %d: %v", i+1, err)
			}
			mustWrite(t, up, chunk)
			_ = up.Close()
		}
		if got := len(hashStatesOf(id)); tt.oldStart != (got == 2) || !tt.oldStart && got != 0 {
			t.Errorf("%+v: %d hash states stored by the PATCHes", tt, got)
		}
		if oldTail {
			// The tail as a driver that does not carry the start and
			// the hash states stores it.
			info, err := client.StatObject(t.Context(), bucket, tailKey(id), minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			meta := map[string]string{}
			for k, v := range info.Metadata {
				if name, ok := strings.CutPrefix(k, headerMetaPrefix); ok && name != metaStartedAt && name != metaHashStates {
					meta[name] = v[0]
				}
			}
			_, err = client.PutObject(t.Context(), bucket, tailKey(id), bytes.NewReader(content), int64(len(content)),
				minio.PutObjectOptions{UserMetadata: meta})
			if err != nil {
				t.Fatal(err)
			}
		}
		ctx := request()
		up, err = stores[1].Resume(ctx, id) // PUT
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		if up.Size() != int64(len(content)) {
			t.Fatalf("PUT: upload resumed at %d, want %d", up.Size(), len(content))
		}
		if _, err := up.Commit(ctx, v1.Descriptor{Digest: digest.FromBytes(content)}); err != nil {
			t.Fatalf("PUT: commit: %v", err)
		}
		if got, err := stores[0].Get(t.Context(), digest.FromBytes(content)); err != nil || !bytes.Equal(got, content) {
			t.Errorf("blob on the other replica: %q, %v", got, err)
		}
		for obj := range client.ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Prefix: "p/docker/registry/v2/repositories/r/_uploads/", Recursive: true}) {
			t.Errorf("%+v: left in the uploads: %s %v", tt, obj.Key, obj.Err)
		}
	}

	// A cancelled upload, with a tail when cancelled, is unknown.
	up, err := stores[0].Create(request())
	if err != nil {
		t.Fatal(err)
	}
	_ = up.Close()
	id := up.ID()
	up, err = stores[1].Resume(request(), id)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, up, []byte("cancelled"))
	_ = up.Close()
	ctx := request()
	up, err = stores[0].Resume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if _, err := s.Resume(request(), id); err != distribution.ErrBlobUploadUnknown {
			t.Errorf("replica %d: resume of a cancelled upload = %v, want ErrBlobUploadUnknown", i, err)
		}
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Errorf("writer state left: %v", left)
	}
}

// TestHashStatesList: the list of hash states a tail carries reads back as
// written, is unknown when absent, malformed or too long, and names the
// keys of the upload's directory only when known.
func TestHashStatesList(t *testing.T) {
	t.Parallel()
	var h hashStates
	h.add("sha256", 13)
	if h.known || h.meta() != "" {
		t.Fatalf("an unknown list became %q", h.meta())
	}
	h = hashStates{known: true}
	if got := hashStatesOf(h.meta()); !got.known || len(got.states) != 0 {
		t.Errorf("empty list read back as %+v", got)
	}
	h.add("sha256", 13)
	h.add("sha256", 13)
	h.add("sha256", 26)
	if got := hashStatesOf(h.meta()); !got.known || !slices.Equal(got.states, []string{"sha256/13", "sha256/26"}) {
		t.Errorf("list %q read back as %+v", h.meta(), got)
	}
	for _, v := range []string{"", "v2 sha256/1", "v1 sha256", "v1 sha256/-1", "v1 sha256/x", "v1 a/b/1", "v1 ../1"} {
		if got := hashStatesOf(v); got.known {
			t.Errorf("hashStatesOf(%q) = %+v, want unknown", v, got)
		}
	}
	for i := range maxListedHashStates + 1 {
		h.add("sha256", int64(100+i))
	}
	if h.known {
		t.Errorf("a list of %d states is still known", len(h.states))
	}
	d := &driver{root: "p/"}
	data := "/docker/registry/v2/repositories/r/_uploads/u/data"
	if keys := d.uploadKeys(data, hashStates{}); keys != nil {
		t.Errorf("keys of an unknown list: %v", keys)
	}
	want := []string{
		"p/docker/registry/v2/repositories/r/_uploads/u/startedat",
		"p/docker/registry/v2/repositories/r/_uploads/u/data",
		"p/docker/registry/v2/repositories/r/_uploads/u/hashstates/sha256/13",
	}
	if keys := d.uploadKeys(data, hashStates{states: []string{"sha256/13"}, known: true}); !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
}
