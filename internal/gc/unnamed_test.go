package gc

import (
	"bytes"
	"context"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/storage"
	"github.com/portcullis/portcullis/storage/miniotest"
)

// TestUnnamedDataCollected uploads one large layer twice at once, the way
// two clients pushing the same image race: both uploads commit and move to
// the blob's path, and the data of the first is named by nothing. A
// collection deletes that data once it is older than the safe age, and
// keeps the data the blob's path names.
func TestUnnamedDataCollected(t *testing.T) {
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d, err := storage.New(t.Context(), storage.Options{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey, Bucket: bucket, PartSize: storage.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	s := &store{t: t, d: d}
	ctx := t.Context()
	content := bytes.Repeat([]byte("layer "), storage.MinPartSize/3)
	layer := digest.FromBytes(content)
	for _, upload := range []string{"u1", "u2"} {
		src := path.Join(repoDir("app"), "_uploads", upload, "data")
		w, err := d.Writer(ctx, src, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(content); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Move(ctx, src, blobData(layer)); err != nil {
			t.Fatal(err)
		}
	}
	s.put(path.Join(layerDir("app", layer), "link"), []byte(layer))
	s.tag("app", "v1", s.image("app", "v1", layer))
	if n := countData(t, srv, bucket); n != 2 {
		t.Fatalf("data objects after the race = %d, want 2", n)
	}

	// Younger than the safe age: kept, though no path names it.
	rep := s.collect(s.collector(Options{Now: time.Now}), false)
	if n := countData(t, srv, bucket); n != 2 || rep.UnnamedData != 0 {
		t.Fatalf("young data: %d data objects left, %d reported deleted; want 2 and 0", n, rep.UnnamedData)
	}

	later := func() time.Time { return time.Now().Add(unnamedDataAge + time.Minute) }
	rep = s.collect(s.collector(Options{Now: later}), false)
	if n := countData(t, srv, bucket); n != 1 {
		t.Fatalf("data objects after the collection = %d, want 1 (the one the blob names)", n)
	}
	if rep.UnnamedData != 1 || rep.BytesReclaimed != int64(len(content)) {
		t.Errorf("report: unnamed data %d (want 1), bytes reclaimed %d (want %d)", rep.UnnamedData, rep.BytesReclaimed, len(content))
	}
	got, err := d.GetContent(ctx, blobData(layer))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the tagged layer after the collection: %d bytes, %v; want %d bytes", len(got), err, len(content))
	}
}

// countData counts the objects of the storage driver's data prefix.
func countData(t *testing.T, srv *miniotest.Server, bucket string) int {
	t.Helper()
	n := 0
	for obj := range srv.Client(t).ListObjectsIter(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		if strings.HasPrefix(obj.Key, "~pending/~data/") {
			n++
		}
	}
	return n
}
