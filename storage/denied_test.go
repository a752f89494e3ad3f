package storage

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/portcullis/portcullis/storage/miniotest"
)

// writeOnce denies the first try of every object write (PUT of an object or
// a copy, POST completing a multipart upload), as MinIO does a write that
// races the removal of its directory, and lets the next try through. It
// counts what it denied by kind.
type writeOnce struct {
	mu     sync.Mutex
	seen   map[string]bool
	denied map[string]int
}

func (o *writeOnce) deny(r *http.Request) bool {
	q := r.URL.Query()
	kind := ""
	switch {
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
		kind = "copy"
	case r.Method == http.MethodPut && !q.Has("partNumber"):
		kind = "put"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		kind = "complete"
	default:
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	key := r.Method + " " + r.URL.Path
	if o.seen[key] {
		return false
	}
	o.seen[key] = true
	o.denied[kind]++
	return true
}

// TestWritesRetriedWhenDenied: every write of a push is denied once, and the
// push still succeeds, its blob readable.
func TestWritesRetriedWhenDenied(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	blobs, proxy, _ := uploadRegistry(t, srv)
	o := &writeOnce{seen: map[string]bool{}, denied: map[string]int{}}
	deny := o.deny
	proxy.deny.Store(&deny)
	pushBlob(t.Context(), t, blobs, []byte("a layer whose every write is denied once"), func() {})
	if o.denied["put"] < 3 {
		t.Errorf("denied %d object PUTs of a push, want at least 3 (startedat, tail, data or link)", o.denied["put"])
	}

	// A multipart commit, and a large object's move (a copy).
	d, proxy2 := proxiedDriver(t, srv, Options{PartSize: MinPartSize})
	proxy2.deny.Store(&deny)
	ctx := t.Context()
	big := bytes.Repeat([]byte("portcullis"), (MinPartSize+MinPartSize/2)/10)
	w, err := d.Writer(ctx, "/big", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Move(ctx, "/big", "/moved"); err != nil {
		t.Fatalf("Move: %v", err)
	}
	got, err := d.GetContent(ctx, "/moved")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("after the move: %d bytes, %v; want the %d written", len(got), err, len(big))
	}
	if o.denied["complete"] == 0 || o.denied["copy"] == 0 {
		t.Errorf("denied %v: want a multipart completion and a copy among them", o.denied)
	}
}

// TestDeniedByPolicy: a write the bucket's policy denies is tried
// 1+deniedRetries times and fails with ErrAccessDenied, naming the path.
func TestDeniedByPolicy(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d, proxy := proxiedDriver(t, srv, Options{})
	var mu sync.Mutex
	tries := 0
	deny := func(r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/forbidden") {
			return false
		}
		mu.Lock()
		tries++
		mu.Unlock()
		return true
	}
	proxy.deny.Store(&deny)
	err := d.PutContent(t.Context(), "/forbidden", []byte("x"))
	// distribution's base driver wraps the error in a storagedriver.Error,
	// which does not unwrap.
	var se storagedriver.Error
	if errors.As(err, &se) {
		err = se.Detail
	}
	if !errors.Is(err, ErrAccessDenied) || !strings.Contains(err.Error(), "/forbidden") {
		t.Fatalf("PutContent: %v; want ErrAccessDenied naming the path", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if tries != 1+deniedRetries {
		t.Errorf("%d tries, want %d", tries, 1+deniedRetries)
	}
}

// proxiedDriver returns a Driver on o.Bucket of srv, or on a new bucket,
// reached through an s3Proxy.
func proxiedDriver(t *testing.T, srv *miniotest.Server, o Options) (*Driver, *s3Proxy) {
	t.Helper()
	proxy, endpoint := startS3Proxy(t, srv)
	o.Endpoint, o.Region = endpoint, "us-east-1"
	return newTestDriver(t, srv, o), proxy
}
