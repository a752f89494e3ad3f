package storage

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// dataObjects returns the keys of the data objects in bucket.
func dataObjects(t *testing.T, srv *miniotest.Server, bucket string) []string {
	t.Helper()
	var keys []string
	for obj := range srv.Client(t).ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		if strings.Contains(obj.Key, pendingDir+"/"+dataDir+"/") {
			keys = append(keys, obj.Key)
		}
	}
	return keys
}

// commitLarge writes content at path through a Writer and commits it.
func commitLarge(t *testing.T, d *Driver, path string, content []byte) {
	t.Helper()
	w, err := d.Writer(t.Context(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, content)
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAliasMove commits an upload larger than a part, the way a blob
// upload ends, and moves it to the blob's path: the data is written once,
// every read of the destination sees all of it, and deleting the
// destination removes the data too.
func TestAliasMove(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket, Prefix: "p", PartSize: MinPartSize, Redirect: true})
	ctx := t.Context()
	content := randomBytes(2*MinPartSize + 12345)
	const src, dst = "/r/_uploads/u1/data", "/blobs/ab/data"

	commitLarge(t, d, src, content)
	raw, err := srv.Client(t).StatObject(ctx, bucket, "p"+src, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if raw.Size != int64(len(aliasBody)) {
		t.Fatalf("object at the upload's key holds %d bytes, want an alias of %d", raw.Size, len(aliasBody))
	}
	data := dataObjects(t, srv, bucket)
	if len(data) != 1 {
		t.Fatalf("data objects after commit = %v, want one", data)
	}

	if err := d.Move(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 1 || got[0] != data[0] {
		t.Fatalf("data objects after Move = %v, want %v (not copied)", got, data)
	}
	if _, err := d.Stat(ctx, src); !isPathNotFound(err) {
		t.Fatalf("Stat of the moved source: %v, want PathNotFoundError", err)
	}

	fi, err := d.Stat(ctx, dst)
	if err != nil || fi.Size() != int64(len(content)) {
		t.Fatalf("Stat = %v, %v; want size %d", fi, err, len(content))
	}
	got, err := d.GetContent(ctx, dst)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("GetContent = %d bytes, %v; want %d bytes", len(got), err, len(content))
	}
	for _, offset := range []int64{0, 10, int64(len(aliasBody)), MinPartSize + 1, int64(len(content)) - 1, int64(len(content)), int64(len(content)) + 5} {
		r, err := d.Reader(ctx, dst, offset)
		if err != nil {
			t.Fatalf("Reader at %d: %v", offset, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		want := content[min(offset, int64(len(content))):]
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Reader at %d = %d bytes, %v; want %d bytes", offset, len(got), err, len(want))
		}
	}
	var walked int64 = -1
	err = d.Walk(ctx, "/blobs", func(fi storagedriver.FileInfo) error {
		if fi.Path() == dst {
			walked = fi.Size()
		}
		return nil
	})
	if err != nil || walked != int64(len(content)) {
		t.Fatalf("Walk size of %s = %d, %v; want %d", dst, walked, err, len(content))
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	u, err := d.RedirectURL(req, dst)
	if err != nil || u == "" {
		t.Fatalf("RedirectURL = %q, %v", u, err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("GET of the redirect = %d, %d bytes, %v; want %d bytes", resp.StatusCode, len(got), err, len(content))
	}

	if err := d.Delete(ctx, "/blobs"); err != nil {
		t.Fatal(err)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 0 {
		t.Fatalf("data objects after Delete = %v, want none", got)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestAliasDeleteFiles removes aliases the way garbage collection does, by
// the batch, beside plain objects and missing paths: their data goes too.
func TestAliasDeleteFiles(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket, PartSize: MinPartSize})
	ctx := t.Context()
	large := randomBytes(MinPartSize + 1)
	commitLarge(t, d, "/b/1/data", large)
	commitLarge(t, d, "/b/2/data", large)
	if err := d.PutContent(ctx, "/b/3/data", []byte("small")); err != nil {
		t.Fatal(err)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 2 {
		t.Fatalf("data objects = %v, want two", got)
	}
	if err := d.DeleteFiles(ctx, []string{"/b/1/data", "/b/3/data", "/b/missing/data"}); err != nil {
		t.Fatal(err)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 1 {
		t.Fatalf("data objects after DeleteFiles = %v, want one", got)
	}
	got, err := d.GetContent(ctx, "/b/2/data")
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("GetContent of the alias kept = %d bytes, %v", len(got), err)
	}
	if err := d.DeleteFiles(ctx, []string{"/b/2/data"}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 0 {
		t.Fatalf("data objects = %v, want none", got)
	}
}

// TestAliasForeignKey refuses to follow an alias object that names a key
// outside the data prefix: it is not the driver's.
func TestAliasForeignKey(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket})
	ctx := t.Context()
	if err := d.PutContent(ctx, "/secret", []byte("not for aliases")); err != nil {
		t.Fatal(err)
	}
	_, err := srv.Client(t).PutObject(ctx, bucket, "a", bytes.NewReader(aliasBody), int64(len(aliasBody)),
		minio.PutObjectOptions{UserMetadata: map[string]string{metaAliasOf: "secret", metaAliasSize: "15"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(t.Context(), "/a"); err == nil {
		t.Fatalf("GetContent of a foreign alias = %q, want an error", got)
	}
	if _, err := d.Stat(t.Context(), "/a"); err == nil {
		t.Fatal("Stat of a foreign alias: no error")
	}
	// Walk and deletes treat it as the object it is, and never follow it.
	var walked int64 = -1
	err = d.Walk(ctx, "/", func(fi storagedriver.FileInfo) error {
		if fi.Path() == "/a" {
			walked = fi.Size()
		}
		return nil
	})
	if err != nil || walked != int64(len(aliasBody)) {
		t.Fatalf("Walk size of a foreign alias = %d, %v; want %d", walked, err, len(aliasBody))
	}
	if err := d.DeleteFiles(ctx, []string{"/a"}); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(ctx, "/secret"); err != nil || string(got) != "not for aliases" {
		t.Fatalf("the key a foreign alias named: %q, %v", got, err)
	}
	if _, err := d.Stat(ctx, "/a"); !isPathNotFound(err) {
		t.Fatalf("Stat after DeleteFiles: %v, want PathNotFoundError", err)
	}
}

func isPathNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// TestAliasOnlyAtDataPaths keeps aliases to paths named data: a large
// Writer elsewhere writes at its own key, and Move of an alias to such a
// path copies the data there and removes the alias and its data.
func TestAliasOnlyAtDataPaths(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket, PartSize: MinPartSize})
	ctx := t.Context()
	content := randomBytes(MinPartSize + 7)
	commitLarge(t, d, "/plain/file", content)
	if got := dataObjects(t, srv, bucket); len(got) != 0 {
		t.Fatalf("data objects of a Writer on a path not named data: %v", got)
	}
	commitLarge(t, d, "/u/data", content)
	if err := d.Move(ctx, "/u/data", "/moved/file"); err != nil {
		t.Fatal(err)
	}
	raw, err := srv.Client(t).StatObject(ctx, bucket, "moved/file", minio.StatObjectOptions{})
	if err != nil || raw.Size != int64(len(content)) {
		t.Fatalf("object at the destination: %d bytes, %v; want the data, %d bytes", raw.Size, err, len(content))
	}
	for _, p := range []string{"/plain/file", "/moved/file"} {
		if got, err := d.GetContent(ctx, p); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("GetContent(%s) = %d bytes, %v; want %d bytes", p, len(got), err, len(content))
		}
	}
	if _, err := d.Stat(ctx, "/u/data"); !isPathNotFound(err) {
		t.Fatalf("Stat of the moved source: %v, want PathNotFoundError", err)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 0 {
		t.Fatalf("data objects after Move to a path not named data: %v", got)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestDeleteUnnamedData removes the data that no alias names once it is
// older than the bound given, and nothing an alias names, wherever the
// alias is.
func TestDeleteUnnamedData(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket, Prefix: "p", PartSize: MinPartSize})
	ctx := t.Context()
	content := randomBytes(MinPartSize + 3)
	commitLarge(t, d, "/r/_uploads/pending/data", content) // named at the upload's path
	commitLarge(t, d, "/r/_uploads/u1/data", content)
	if err := d.Move(ctx, "/r/_uploads/u1/data", "/blobs/ab/data"); err != nil {
		t.Fatal(err)
	}
	commitLarge(t, d, "/r/_uploads/u2/data", content)
	if err := d.Move(ctx, "/r/_uploads/u2/data", "/blobs/ab/data"); err != nil { // u1's data is named by nothing now
		t.Fatal(err)
	}
	if got := dataObjects(t, srv, bucket); len(got) != 3 {
		t.Fatalf("data objects = %v, want 3", got)
	}
	if n, size, err := d.DeleteUnnamedData(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 || size != 0 {
		t.Fatalf("DeleteUnnamedData of young data = %d, %d, %v; want nothing deleted", n, size, err)
	}
	n, size, err := d.DeleteUnnamedData(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 1 || size != int64(len(content)) {
		t.Fatalf("DeleteUnnamedData = %d, %d, %v; want 1, %d", n, size, err, len(content))
	}
	if got := dataObjects(t, srv, bucket); len(got) != 2 {
		t.Fatalf("data objects after = %v, want 2", got)
	}
	for _, p := range []string{"/r/_uploads/pending/data", "/blobs/ab/data"} {
		if got, err := d.GetContent(ctx, p); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("GetContent(%s) = %d bytes, %v; want %d bytes", p, len(got), err, len(content))
		}
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestAliasReadAfterStat reads a large blob as distribution serves it, a
// Stat then a Reader: the Reader asks for the data the Stat's alias names,
// once, at every offset, and goes back to the path when that data is gone.
func TestAliasReadAfterStat(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	proxy, endpoint := startS3Proxy(t, srv)
	bucket := srv.NewBucket(t)
	d, err := New(t.Context(), Options{
		Endpoint: endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		Bucket: bucket, Prefix: "p", Region: "us-east-1", PartSize: MinPartSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	content := randomBytes(MinPartSize + 1000)
	const blob = "/docker/registry/v2/blobs/sha256/ab/abc/data"
	commitLarge(t, d, blob, content)
	data := dataObjects(t, srv, bucket)
	if len(data) != 1 {
		t.Fatalf("data objects = %v, want one", data)
	}
	for _, offset := range []int64{0, 10, int64(len(aliasBody)) + 1, int64(len(content)) - 1, int64(len(content))} {
		if fi, err := d.Stat(ctx, blob); err != nil || fi.Size() != int64(len(content)) {
			t.Fatalf("Stat = %v, %v", fi, err)
		}
		proxy.take("p", "")
		r, err := d.Reader(ctx, blob, offset)
		if err != nil {
			t.Fatalf("Reader at %d: %v", offset, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, content[offset:]) {
			t.Fatalf("Reader at %d = %d bytes, %v; want %d bytes", offset, len(got), err, len(content)-int(offset))
		}
		want := []string{"GET " + data[0]}
		if offset == int64(len(content)) {
			want = nil
		}
		if reqs := proxy.take("p", ""); !slices.Equal(reqs, want) {
			t.Fatalf("requests of the Reader at %d after Stat = %v, want %v", offset, reqs, want)
		}
	}
	// Without a Stat before it, a Reader reads the alias, then its data.
	proxy.take("p", "")
	r, err := d.Reader(ctx, blob, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if reqs := proxy.take("p", ""); len(reqs) != 2 || reqs[0] != "GET blobs/sha256/ab/abc/data" {
		t.Fatalf("requests of a Reader without Stat = %v, want the alias then its data", reqs)
	}
	// Data removed after the Stat: the Reader answers what the path holds.
	if _, err := d.Stat(ctx, blob); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client(t).RemoveObject(ctx, bucket, data[0], minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Reader(ctx, blob, 0); !isPathNotFound(err) {
		t.Fatalf("Reader of an alias whose data is gone: %v, want PathNotFoundError", err)
	}
}
