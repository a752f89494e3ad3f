package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/front"
	"github.com/portcullis/portcullis/storage"
	"github.com/portcullis/portcullis/storage/filesystem"
)

// pinger is a backend that can say whether it is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

// newDriver builds the configured storage backend.
func newDriver(ctx context.Context, cfg *config.Config) (storagedriver.StorageDriver, error) {
	if s3 := cfg.Storage.S3; s3 != nil {
		access, secret, err := s3Credentials(s3)
		if err != nil {
			return nil, err
		}
		d, err := storage.New(ctx, storage.Options{
			Endpoint:    s3.Endpoint,
			Region:      s3.Region,
			Bucket:      s3.Bucket,
			AccessKey:   access,
			SecretKey:   secret,
			Prefix:      s3.Prefix,
			CAFile:      s3.CAFile,
			PartSize:    int64(s3.PartSize),
			Concurrency: s3.Concurrency,
			Redirect:    s3.Redirect,
		})
		if err != nil {
			return nil, fmt.Errorf("storage.s3: %w", err)
		}
		return d, nil
	}
	root := cfg.FilesystemRoot()
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("storage.filesystem.rootDirectory: %w", err)
	}
	d, err := filesystem.New(root)
	if err != nil {
		return nil, fmt.Errorf("storage.filesystem: %w", err)
	}
	return d, nil
}

// s3Credentials reads the key files, else the AWS_* environment variables.
func s3Credentials(s3 *config.S3) (access, secret string, err error) {
	if s3.AccessKeyFile != "" {
		a, err := os.ReadFile(s3.AccessKeyFile)
		if err != nil {
			return "", "", fmt.Errorf("storage.s3.accessKeyFile: %w", err)
		}
		s, err := os.ReadFile(s3.SecretKeyFile)
		if err != nil {
			return "", "", fmt.Errorf("storage.s3.secretKeyFile: %w", err)
		}
		return strings.TrimSpace(string(a)), strings.TrimSpace(string(s)), nil
	}
	access, secret = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if (access == "") != (secret == "") {
		return "", "", errors.New("storage.s3: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
	}
	return access, secret, nil
}

// fsBarriers gives the front handler the filesystem driver's barriers.
type fsBarriers struct{ d *filesystem.Driver }

func (b fsBarriers) Barrier(ctx context.Context) (context.Context, func(context.Context) error) {
	ctx, barrier := b.d.WithBarrier(ctx)
	return ctx, barrier.Wait
}

// storageHooksOf returns what d offers the front handler: its barriers
// (the filesystem's shared syncs, S3's record of ignored write failures)
// and, on S3, what takes the offsets clients give of their uploads.
func storageHooksOf(d storagedriver.StorageDriver) (front.Barriers, front.UploadOffsets) {
	switch d := d.(type) {
	case *filesystem.Driver:
		return fsBarriers{d: d}, nil
	case *storage.Driver:
		return s3Barriers{}, s3UploadOffsets{}
	}
	return nil, nil
}

// s3Barriers refuses to acknowledge a write request when one of its S3
// writes failed where distribution ignores the error (an upload's state
// stored at the end of a PATCH): every S3 write is durable when it returns,
// so there is nothing to sync.
type s3Barriers struct{}

func (s3Barriers) Barrier(ctx context.Context) (context.Context, func(context.Context) error) {
	return storage.WithRequest(ctx)
}

// s3UploadOffsets lets the S3 driver resume an upload its client says is
// empty without reading its writer state.
type s3UploadOffsets struct{}

func (s3UploadOffsets) UploadOffset(ctx context.Context, upload string, offset int64) {
	storage.UploadOffset(ctx, upload, offset)
}

// blobFiles opens blobs' files on the filesystem, in distribution's layout
// (blobs/<algorithm>/<first two hex>/<hex>/data), for the front handler to
// send them with sendfile.
type blobFiles struct {
	driver storagedriver.StorageDriver
}

func (b blobFiles) OpenBlob(ctx context.Context, d digest.Digest, _ int64) (io.ReadSeekCloser, error) {
	rc, err := b.driver.Reader(ctx, digests.BlobDataPath(d), 0)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	f, ok := rc.(*os.File)
	if !ok {
		_ = rc.Close()
		return nil, fmt.Errorf("open blob %s: the storage driver gave a %T, not a file", d, rc)
	}
	return f, nil
}

// blobObjects opens blobs' data on S3, in distribution's layout, for the
// front handler to copy the object store's answer to the client as
// distribution's handler does, without its 4 MiB buffer per request and the
// copy through it.
type blobObjects struct {
	driver storagedriver.StorageDriver
}

func (b blobObjects) OpenBlob(ctx context.Context, d digest.Digest, size int64) (io.ReadSeekCloser, error) {
	path := digests.BlobDataPath(d)
	return &blobReader{size: size, open: func(offset int64) (io.ReadCloser, error) {
		return b.driver.Reader(ctx, path, offset)
	}}, nil
}

// blobReader reads a blob of known size through a storage driver from the
// offset it was last sought to. Like distribution's file reader, it asks the
// driver at its first Read, not before: a HEAD, or a GET answered 304 or
// 416, costs no request.
type blobReader struct {
	size   int64
	open   func(offset int64) (io.ReadCloser, error)
	offset int64
	rc     io.ReadCloser // open at offset, or nil
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.offset >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, err := r.open(r.offset)
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			// As distribution's file reader: the data is gone since its
			// Stat, the answer ends here.
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		r.rc = rc
	}
	n, err := r.rc.Read(p)
	r.offset += int64(n)
	return n, err
}

func (r *blobReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.offset
	case io.SeekEnd:
		offset += r.size
	default:
		return r.offset, fmt.Errorf("seek blob: whence %d", whence)
	}
	if offset < 0 {
		return r.offset, fmt.Errorf("seek blob: negative offset %d", offset)
	}
	if offset != r.offset && r.rc != nil {
		err := r.rc.Close()
		r.rc = nil
		if err != nil {
			return r.offset, fmt.Errorf("seek blob: %w", err)
		}
	}
	r.offset = offset
	return offset, nil
}

func (r *blobReader) Close() error {
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	return err
}
