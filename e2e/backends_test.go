package e2e

import (
	"fmt"
	"testing"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// backend is a storage backend the registry runs on in a test.
type backend struct {
	name string
	// options returns start options for a registry on this backend; extra
	// is appended to the configuration (top-level keys other than storage).
	options func(t *testing.T, extra string) startOptions
}

// backends lists every storage backend: the suites that run on each prove
// the same behaviour on both.
func backends() []backend {
	return []backend{
		{name: "filesystem", options: func(_ *testing.T, extra string) startOptions {
			return startOptions{config: "version: 1\n" + extra}
		}},
		{name: "s3", options: func(t *testing.T, extra string) startOptions {
			return s3Options(miniotest.Start(t), t, extra)
		}},
	}
}

// s3Options configures a registry on a new bucket of srv, with credentials
// from the environment as operators pass them.
func s3Options(srv *miniotest.Server, t *testing.T, extra string) startOptions {
	bucket := srv.NewBucket(t)
	return startOptions{
		config: fmt.Sprintf("version: 1\nstorage:\n  s3:\n    endpoint: %s\n    region: us-east-1\n    bucket: %s\n%s", srv.Endpoint, bucket, extra),
		env:    []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey},
	}
}
