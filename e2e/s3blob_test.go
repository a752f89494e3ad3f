package e2e

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/minio/minio-go/v7"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// TestS3LargeBlob pushes with crane an image whose layer is larger than a
// part, so that the bucket holds it once (a data object and an alias at the
// blob's key), then pulls it back with crane, through the registry and
// through presigned redirects, and checks every byte against its digest.
func TestS3LargeBlob(t *testing.T) {
	t.Parallel()
	for _, redirect := range []bool{false, true} {
		t.Run(fmt.Sprintf("redirect=%v", redirect), func(t *testing.T) {
			t.Parallel()
			crane := tool(t, "crane")
			srv := miniotest.Start(t)
			extra := ""
			if redirect {
				extra = "    redirect: true\n"
			}
			o := s3Options(srv, t, extra)
			reg := startRegistry(t, o)
			h := reg.Addr

			img, err := random.Image(24<<20, 1)
			if err != nil {
				t.Fatal(err)
			}
			tarPath := filepath.Join(t.TempDir(), "img.tar")
			writeTarball(t, tarPath, img)
			run(t, nil, crane, "push", "--insecure", tarPath, h+"/big/app:v1")
			// A second push of the same layer to another repository.
			run(t, nil, crane, "push", "--insecure", tarPath, h+"/big/other:v1")
			run(t, nil, crane, "validate", "--insecure", "--remote", h+"/big/app:v1")

			layers := mustLayers(t, img)
			d, err := layers[0].Digest()
			if err != nil {
				t.Fatal(err)
			}
			for _, repo := range []string{"big/app", "big/other"} {
				blob := run(t, nil, crane, "blob", "--insecure", h+"/"+repo+"@"+d.String())
				if got := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(blob))); got != d.String() {
					t.Errorf("crane blob %s@%s: %d bytes with digest %s", repo, d, len(blob), got)
				}
			}

			// The layer is in the bucket once: one data object, no copy of
			// it at the blob's key.
			bucket := bucketOf(t, o.config)
			var data, blobBytes int64
			for obj := range srv.Client(t).ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
				if obj.Err != nil {
					t.Fatal(obj.Err)
				}
				switch {
				case strings.HasPrefix(obj.Key, "~pending/~data/"):
					data += obj.Size
				case strings.HasPrefix(obj.Key, "docker/registry/v2/blobs/"):
					blobBytes += obj.Size
				}
			}
			size, _ := layers[0].Size()
			if data != size || blobBytes >= size {
				t.Errorf("bucket holds %d bytes of data objects and %d under blobs/, want the %d-byte layer once, as a data object", data, blobBytes, size)
			}
		})
	}
}

// bucketOf returns the bucket a configuration written by s3Options names.
func bucketOf(t *testing.T, config string) string {
	t.Helper()
	for _, line := range strings.Split(config, "\n") {
		if b, ok := strings.CutPrefix(strings.TrimSpace(line), "bucket: "); ok {
			return b
		}
	}
	t.Fatalf("no bucket in %q", config)
	return ""
}
