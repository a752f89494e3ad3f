package main

import (
	"context"
	"time"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// minioServer is the MinIO process that the registries on S3 share, one
// bucket per run.
type minioServer struct {
	*benchproc.MinIO
	// proxy, when set, logs the requests of the registries, which then
	// reach MinIO through it.
	proxy *s3Logger
}

// startMinIO starts bin as a single-drive MinIO server on free loopback
// ports with its data under work, and waits until it is ready. The caller
// must call stop, also when startMinIO returns an error together with a
// non-nil server.
func startMinIO(ctx context.Context, bin, work string) (*minioServer, error) {
	m, err := benchproc.StartMinIO(ctx, bin, work)
	if m == nil {
		return nil, err
	}
	return &minioServer{MinIO: m}, err
}

// newBucket creates an empty bucket with a name not used before on m.
func (m *minioServer) newBucket(ctx context.Context) (*bucket, error) {
	name, err := m.NewBucket(ctx)
	if err != nil {
		return nil, err
	}
	endpoint := m.Endpoint
	if m.proxy != nil {
		endpoint = m.proxy.endpoint
	}
	return &bucket{endpoint: endpoint, name: name, accessKey: m.AccessKey, secretKey: m.SecretKey}, nil
}

// cpu returns the CPU time MinIO has used so far.
func (m *minioServer) cpu() (time.Duration, error) {
	return benchproc.CPUTime(m.Pid())
}

// stop ends MinIO. It is safe to call on a server that failed to start.
func (m *minioServer) stop() error {
	if m == nil {
		return nil
	}
	return m.Stop()
}
