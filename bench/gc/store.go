package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// Storage backends.
const (
	filesystem = "filesystem"
	s3         = "s3"
)

// store is one copy of the dataset: a directory or a bucket, and the
// configurations with which each registry reaches it.
type store interface {
	kind() string
	put(ctx context.Context, o object) error
	// scan returns the blobs left (manifests included) and how many
	// manifest revision links are left.
	scan(ctx context.Context) (map[digest.Digest]bool, int, error)
	// remove deletes the copy.
	remove(ctx context.Context) error
	// oursStorage is the storage section of Portcullis's configuration,
	// indented by two spaces.
	oursStorage() string
	// upstreamStorage is the storage section of distribution's.
	upstreamStorage() string
	// env is what a Portcullis process needs in its environment.
	env() []string
}

// seed writes every object of d into st with workers goroutines.
func seed(ctx context.Context, st store, d *dataset, workers int) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objs := make(chan object, workers*4)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for o := range objs {
				if err := st.put(ctx, o); err != nil {
					errs <- fmt.Errorf("write %s: %w", o.key, err)
					cancel()
					return
				}
			}
		})
	}
	err := d.objects(func(o object) error {
		select {
		case objs <- o:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(objs)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = e // a worker's error says more than the context's
	}
	return time.Since(start), err
}

// fsStore is the dataset in a directory: the rootdirectory of both
// registries' filesystem drivers.
type fsStore struct{ dir string }

func (s *fsStore) kind() string { return filesystem }

func (s *fsStore) put(_ context.Context, o object) error {
	p := filepath.Join(s.dir, filepath.FromSlash(o.key))
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return err
	}
	return os.WriteFile(p, o.data, 0o640)
}

func (s *fsStore) scan(context.Context) (map[digest.Digest]bool, int, error) {
	blobs, revisions := map[digest.Digest]bool{}, 0
	err := filepath.WalkDir(filepath.Join(s.dir, root), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d, ok := blobKey(key); ok {
			blobs[d] = true
		} else if isRevisionLink(key) {
			revisions++
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return blobs, revisions, err
}

func (s *fsStore) remove(context.Context) error { return os.RemoveAll(s.dir) }

func (s *fsStore) oursStorage() string {
	return "  filesystem:\n    rootDirectory: " + s.dir + "\n"
}

func (s *fsStore) upstreamStorage() string {
	return "  filesystem:\n    rootdirectory: " + s.dir + "\n"
}

func (s *fsStore) env() []string { return nil }

// s3Store is the dataset in a bucket of its own on the MinIO server, at
// the bucket's root.
type s3Store struct {
	minio  *benchproc.MinIO
	bucket string
}

func newS3Store(ctx context.Context, m *benchproc.MinIO) (*s3Store, error) {
	b, err := m.NewBucket(ctx)
	if err != nil {
		return nil, err
	}
	return &s3Store{minio: m, bucket: b}, nil
}

func (s *s3Store) kind() string { return s3 }

func (s *s3Store) put(ctx context.Context, o object) error {
	_, err := s.minio.Client.PutObject(ctx, s.bucket, o.key, bytes.NewReader(o.data), int64(len(o.data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
	return err
}

func (s *s3Store) scan(ctx context.Context) (map[digest.Digest]bool, int, error) {
	blobs, revisions := map[digest.Digest]bool{}, 0
	for obj := range s.minio.Client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: root + "/", Recursive: true}) {
		if obj.Err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", s.bucket, obj.Err)
		}
		if d, ok := blobKey(obj.Key); ok {
			blobs[d] = true
		} else if isRevisionLink(obj.Key) {
			revisions++
		}
	}
	return blobs, revisions, nil
}

func (s *s3Store) remove(ctx context.Context) error { return s.minio.RemoveBucket(ctx, s.bucket) }

func (s *s3Store) oursStorage() string {
	return strings.Join([]string{
		"  s3:",
		"    endpoint: " + s.minio.Endpoint,
		"    region: us-east-1",
		"    bucket: " + s.bucket,
		"",
	}, "\n")
}

func (s *s3Store) upstreamStorage() string {
	return strings.Join([]string{
		"  s3:",
		"    region: us-east-1",
		"    regionendpoint: " + s.minio.Endpoint,
		"    bucket: " + s.bucket,
		"    accesskey: " + s.minio.AccessKey,
		"    secretkey: " + s.minio.SecretKey,
		"    secure: false",
		"    forcepathstyle: true",
		"    v4auth: true",
		"    rootdirectory: /",
		"",
	}, "\n")
}

func (s *s3Store) env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.minio.SecretKey}
}
