package storage

import (
	"bytes"
	"context"
	"time"

	"github.com/minio/minio-go/v7"
)

// MinIO keeps objects as files and removes a directory that a delete leaves
// empty. A write that needs that directory again at the same moment is
// refused with AccessDenied once MinIO's own single retry has lost the race
// too (minio/minio#12914). Concurrent uploads of one repository store and
// remove objects under the same prefixes all the time (tails, startedat, hash
// states), so a push can meet it: 8 writers storing and removing one object
// each under a shared prefix met it once in 3,200 pairs. A write so refused
// is tried again; a denial by policy is refused again and returned, deniedDelay
// × (1+2+4) later.
const (
	deniedRetries = 3
	deniedDelay   = 10 * time.Millisecond
)

// retryDenied runs write, and again while S3 answers AccessDenied, up to
// deniedRetries more times. write must be safe to repeat: each call sends the
// whole request again.
func retryDenied(ctx context.Context, write func() error) error {
	err := write()
	delay := deniedDelay
	for i := 0; i < deniedRetries && errorCode(err) == codeAccessDenied; i++ {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay *= 2
		err = write()
	}
	return err
}

// putObject stores data at key, with retryDenied.
func (d *driver) putObject(ctx context.Context, key string, data []byte, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	var info minio.UploadInfo
	err := retryDenied(ctx, func() error {
		var err error
		info, err = d.client.PutObject(ctx, d.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
		return err
	})
	return info, err
}
