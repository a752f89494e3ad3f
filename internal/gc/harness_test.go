package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/storage"
	"github.com/portcullis/portcullis/storage/miniotest"
)

// store writes content in distribution's layout, as the registry core
// and our referrers index do.
type store struct {
	t *testing.T
	d storagedriver.StorageDriver
}

func newStore(t *testing.T) *store {
	return &store{t: t, d: inmemory.New()}
}

// backends runs f on the in-memory driver (deletes one tree at a time) and
// on a real MinIO through our S3 driver (deletes files in batches).
func backends(t *testing.T, f func(t *testing.T, s *store)) {
	t.Run("inmemory", func(t *testing.T) { f(t, newStore(t)) })
	t.Run("minio", func(t *testing.T) {
		srv := miniotest.Start(t)
		d, err := storage.New(t.Context(), storage.Options{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey,
			SecretKey: srv.SecretKey, Bucket: srv.NewBucket(t)})
		if err != nil {
			t.Fatal(err)
		}
		f(t, &store{t: t, d: d})
	})
}

func (s *store) put(p string, b []byte) {
	s.t.Helper()
	if err := s.d.PutContent(context.Background(), p, b); err != nil {
		s.t.Fatal(err)
	}
}

// blob stores a blob and links it into repo.
func (s *store) blob(repo, content string) digest.Digest {
	d := digest.FromString(content)
	s.put(blobData(d), []byte(content))
	s.put(path.Join(layerDir(repo, d), "link"), []byte(d))
	return d
}

// image stores an image manifest over the given layers (and a config of
// its own) and returns its digest.
func (s *store) image(repo, name string, layers ...digest.Digest) digest.Digest {
	cfg := s.blob(repo, "config of "+name)
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cfg, Size: 1}}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: l, Size: 1})
	}
	return s.manifest(repo, m)
}

// referrer stores an artifact manifest whose subject is subject, with one
// blob of its own, and records it in the referrers index.
func (s *store) referrer(repo, name string, subject digest.Digest) digest.Digest {
	b := s.blob(repo, "payload of "+name)
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, ArtifactType: "application/vnd.test." + name,
		Config: v1.DescriptorEmptyJSON, Layers: []v1.Descriptor{{MediaType: "application/octet-stream", Digest: b, Size: 1}},
		Subject: &v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: subject, Size: 1}}
	m.SchemaVersion = 2
	s.blob(repo, "{}")
	d := s.manifest(repo, m)
	s.put(referrerEntry(repo, subject, d), []byte(`{}`))
	return d
}

func (s *store) index(repo string, children ...digest.Digest) digest.Digest {
	ix := v1.Index{MediaType: v1.MediaTypeImageIndex}
	ix.SchemaVersion = 2
	for _, c := range children {
		ix.Manifests = append(ix.Manifests, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: c, Size: 1})
	}
	return s.manifest(repo, ix)
}

func (s *store) manifest(repo string, m any) digest.Digest {
	b, err := json.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	d := digest.FromBytes(b)
	s.put(blobData(d), b)
	s.put(path.Join(revisionDir(repo, d), "link"), []byte(d))
	return d
}

func (s *store) tag(repo, tag string, d digest.Digest) {
	s.put(tagCurrent(repo, tag), []byte(d))
	s.put(path.Join(tagIndexDir(repo, tag, d), "link"), []byte(d))
}

func (s *store) exists(p string) bool {
	_, err := s.d.Stat(context.Background(), p)
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		s.t.Fatal(err)
	}
	return err == nil
}

func (s *store) hasBlob(d digest.Digest) bool { return s.exists(blobData(d)) }

func (s *store) hasManifest(repo string, d digest.Digest) bool {
	return s.exists(path.Join(revisionDir(repo, d), "link"))
}

func (s *store) hasTag(repo, tag string) bool { return s.exists(tagCurrent(repo, tag)) }

// collector returns a collector whose clock runs an hour ahead, so that
// everything stored is older than its grace period unless a test says
// otherwise.
func (s *store) collector(o Options) *Collector {
	s.t.Helper()
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().Add(time.Hour) }
	}
	c, err := New(s.d, o)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func (s *store) collect(c *Collector, dryRun bool) *Report {
	s.t.Helper()
	rep, err := c.Collect(context.Background(), dryRun)
	if err != nil {
		s.t.Fatalf("collect: %v", err)
	}
	return rep
}

func deletedSet(rep *Report) map[string]bool {
	out := map[string]bool{}
	for _, d := range rep.Deleted {
		out[fmt.Sprintf("%s %s %s %s %s", d.Kind, d.Repository, d.Tag, d.Digest, d.Upload)] = true
	}
	return out
}

// aged makes the files below prefix look shift older (negative: newer) in
// listings, for tests of times the in-memory driver cannot backdate.
type aged struct {
	storagedriver.StorageDriver
	prefix string
	shift  time.Duration
}

func (a aged) Walk(ctx context.Context, from string, f storagedriver.WalkFn, opts ...func(*storagedriver.WalkOptions)) error {
	return a.StorageDriver.Walk(ctx, from, func(fi storagedriver.FileInfo) error {
		if strings.HasPrefix(fi.Path(), a.prefix) {
			fi = agedInfo{fi, a.shift}
		}
		return f(fi)
	}, opts...)
}

type agedInfo struct {
	storagedriver.FileInfo
	shift time.Duration
}

func (i agedInfo) ModTime() time.Time { return i.FileInfo.ModTime().Add(-i.shift) }
