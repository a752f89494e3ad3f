package storage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"

	"github.com/portcullis/portcullis/storage/miniotest"
)

const mib = 1 << 20

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n)})
	_, _ = r.Read(b)
	return b
}

// leftovers returns the keys and incomplete uploads in bucket that are not
// committed data: pending tails, multipart uploads and data objects that no
// alias names.
func leftovers(t *testing.T, srv *miniotest.Server, bucket string) []string {
	t.Helper()
	client := srv.Client(t)
	var out []string
	named := map[string]bool{} // data keys, relative to the prefix, that aliases name
	var data []string
	for obj := range client.ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		switch {
		case strings.Contains(obj.Key, pendingDir+"/"+dataDir+"/"):
			data = append(data, obj.Key)
		case strings.Contains(obj.Key, pendingDir):
			out = append(out, obj.Key)
		case maybeAlias(obj.Key, obj.Size):
			info, err := client.StatObject(t.Context(), bucket, obj.Key, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if k := info.Metadata.Get(headerMetaPrefix + metaAliasOf); k != "" {
				named[k] = true
			}
		}
	}
	for _, k := range data {
		_, rel, _ := strings.Cut(k, "/"+pendingDir+"/")
		if !named[pendingDir+"/"+rel] && !named[k] {
			out = append(out, k)
		}
	}
	for up := range client.ListIncompleteUploads(t.Context(), bucket, "", true) {
		if up.Err != nil {
			t.Fatal(up.Err)
		}
		out = append(out, "upload:"+up.Key)
	}
	return out
}

// TestWriterResume writes one object over many requests the way chunked
// blob uploads do, closing and reopening the writer between chunks of sizes
// around the part size, and checks sizes, the result and the clean-up.
func TestWriterResume(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket, Prefix: "p", PartSize: MinPartSize})
	ctx := t.Context()
	const path = "/repo/_uploads/u1/data"
	chunks := []int{0, 3 * mib, 3 * mib, 1, 6 * mib, 0, 12*mib + 7, 5 * mib, 100}
	var want []byte
	for i, n := range chunks {
		w, err := d.Writer(ctx, path, i > 0)
		if err != nil {
			t.Fatalf("chunk %d: Writer: %v", i, err)
		}
		if w.Size() != int64(len(want)) {
			t.Fatalf("chunk %d: resumed Size = %d, want %d", i, w.Size(), len(want))
		}
		chunk := randomBytes(n)
		if _, err := w.Write(chunk); err != nil {
			t.Fatalf("chunk %d: Write: %v", i, err)
		}
		want = append(want, chunk...)
		if i == len(chunks)-1 {
			if err := w.Commit(ctx); err != nil {
				t.Fatalf("Commit: %v", err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatalf("chunk %d: Close: %v", i, err)
		}
		if w.Size() != int64(len(want)) {
			t.Fatalf("chunk %d: Size after Close = %d, want %d", i, w.Size(), len(want))
		}
		if i < len(chunks)-1 {
			// Uncommitted data is neither visible nor listed.
			if _, err := d.Stat(ctx, path); !errors.As(err, new(storagedriver.PathNotFoundError)) {
				t.Fatalf("chunk %d: Stat of uncommitted path = %v, want PathNotFoundError", i, err)
			}
			if paths, err := d.List(ctx, "/"); err != nil || len(paths) != 0 {
				t.Fatalf("chunk %d: List(/) = %v, %v; want nothing", i, paths, err)
			}
		}
	}
	got, err := d.GetContent(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("content differs: got %d bytes, want %d", len(got), len(want))
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Errorf("writer state left after Commit: %v", left)
	}
}

// TestWriterMemoryBound checks that one big Write never buffers more than a
// part.
func TestWriterMemoryBound(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{PartSize: MinPartSize})
	ctx := t.Context()
	fw, err := d.Writer(ctx, "/big", false)
	if err != nil {
		t.Fatal(err)
	}
	w := fw.(*writer)
	data := randomBytes(23 * mib)
	for off := 0; off < len(data); off += 3 * mib {
		if _, err := w.Write(data[off:min(off+3*mib, len(data))]); err != nil {
			t.Fatal(err)
		}
		if cap(w.buf) > MinPartSize {
			t.Fatalf("buffer capacity %d exceeds the part size %d", cap(w.buf), MinPartSize)
		}
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, "/big")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetContent = %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
}

// TestWriterLostClose reopens a writer whose previous request sent a part but
// died before Close, so the stored state is older than the upload.
func TestWriterLostClose(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{PartSize: MinPartSize})
	ctx := t.Context()
	data := randomBytes(16 * mib)

	tests := []struct {
		name     string
		first    int   // bytes written and closed by the first request
		lost     int   // bytes written by the request that dies
		wantSize int64 // Size of the writer reopened after it
	}{
		// The tail names the upload, and the lost request's part (which
		// begins with the tail) is found in it: resume after the parts.
		{name: "part in the recorded upload", first: 6 * mib, lost: 4 * mib, wantSize: 10 * mib},
		// The lost request started the upload, which no tail names: resume
		// from the tail; the upload is orphaned.
		{name: "part in an unrecorded upload", first: 3 * mib, lost: 4 * mib, wantSize: 3 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/lost/" + strings.ReplaceAll(tt.name, " ", "-")
			w, err := d.Writer(ctx, path, false)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, w, data[:tt.first])
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			w, err = d.Writer(ctx, path, true)
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, w, data[tt.first:tt.first+tt.lost])
			// No Close: the request died.

			w, err = d.Writer(ctx, path, true)
			if err != nil {
				t.Fatal(err)
			}
			if w.Size() != tt.wantSize {
				t.Fatalf("Size after a lost Close = %d, want %d", w.Size(), tt.wantSize)
			}
			mustWrite(t, w, data[w.Size():])
			if err := w.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			got, err := d.GetContent(ctx, path)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("GetContent = %d bytes, %v; want %d bytes", len(got), err, len(data))
			}
		})
	}
}

func mustWrite(t *testing.T, w io.Writer, p []byte) {
	t.Helper()
	if n, err := w.Write(p); err != nil || n != len(p) {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(p))
	}
}

// TestWriterCancelAndDelete checks that Cancel, and Delete of a directory
// holding an abandoned upload, leave no writer state behind.
func TestWriterCancelAndDelete(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket, PartSize: MinPartSize})
	ctx := t.Context()

	open := func(path string, n int) storagedriver.FileWriter {
		w, err := d.Writer(ctx, path, false)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, randomBytes(n))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w, err = d.Writer(ctx, path, true)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}

	w := open("/c/_uploads/1/data", 7*mib)
	if err := w.Cancel(ctx); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close after Cancel: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Cancel succeeded")
	}
	if _, err := d.Writer(ctx, "/c/_uploads/1/data", true); !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Fatalf("Writer(append) after Cancel = %v, want PathNotFoundError", err)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Fatalf("writer state left after Cancel: %v", left)
	}

	// An abandoned upload: parts, a tail and a file beside it.
	w = open("/d/_uploads/2/data", 8*mib)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, "/d/_uploads/2/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/d/_uploads/2"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Fatalf("writer state left after Delete: %v", left)
	}
	if err := d.Delete(ctx, "/d"); !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Fatalf("Delete of an emptied directory = %v, want PathNotFoundError", err)
	}
}

// TestWriterAppendCommitted checks the append rules for committed objects.
func TestWriterAppendCommitted(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{})
	ctx := t.Context()
	if err := d.PutContent(ctx, "/full", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Writer(ctx, "/full", true); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("append to a non-empty committed object: %v, want an error", err)
	}
	if _, err := d.Writer(ctx, "/none", true); !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Fatalf("append to nothing: %v, want PathNotFoundError", err)
	}
	w, err := d.Writer(ctx, "/full", false)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, []byte("xy"))
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err == nil {
		t.Fatal("second Commit succeeded")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close after Commit: %v", err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("second Close succeeded")
	}
	if got, err := d.GetContent(ctx, "/full"); err != nil || string(got) != "xy" {
		t.Fatalf("GetContent = %q, %v; want the new content", got, err)
	}
}
