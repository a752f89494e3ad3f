package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"sync"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/scanner"
	"github.com/portcullis/portcullis/trust"
)

// maxCachedManifestBytes bounds the bytes of the manifests storedContent
// keeps (content addressed, so never stale): a manifest may be 4 MiB, a
// bound on their number alone would let a few thousand hold gigabytes.
const maxCachedManifestBytes = 16 << 20

// storedContent is api.Stored over the registry's storage: the catalog,
// the tags and their link files' times, manifests read once per digest.
type storedContent struct {
	repos  indexedRepos
	driver storagedriver.StorageDriver

	mu        sync.Mutex
	manifests map[digest.Digest]manifestInfo
	cached    int // bytes of the payloads in manifests
}

var _ api.Stored = (*storedContent)(nil)

type manifestInfo struct {
	mediaType string
	size      int64
	payload   []byte
}

func newStoredContent(repos indexedRepos, driver storagedriver.StorageDriver) *storedContent {
	return &storedContent{repos: repos, driver: driver, manifests: map[digest.Digest]manifestInfo{}}
}

// Repositories lists at most n repositories after last, as the catalog
// does, without the vulnerability database's.
func (s *storedContent) Repositories(ctx context.Context, last string, n int) ([]string, error) {
	var out []string
	buf := make([]string, n)
	for len(out) < n {
		k, err := s.repos.ns.Repositories(ctx, buf, last)
		for _, name := range buf[:k] {
			if name != scanner.DBRepository && len(out) < n {
				out = append(out, name)
			}
		}
		var nf storagedriver.PathNotFoundError
		if errors.Is(err, io.EOF) || errors.As(err, &nf) || k == 0 {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list repositories: %w", err)
		}
		last = buf[k-1]
	}
	return out, nil
}

func (s *storedContent) repo(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", name, err)
	}
	r, err := s.repos.ns.Repository(ctx, named)
	if err != nil {
		return nil, err
	}
	return digests.Wrap(r, s.repos.links), nil
}

// Tags returns repo's tags in order.
func (s *storedContent) Tags(ctx context.Context, name string) ([]string, error) {
	r, err := s.repo(ctx, name)
	if err != nil {
		return nil, err
	}
	tags, err := r.Tags(ctx).All(ctx)
	var unknown distribution.ErrRepositoryUnknown
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &unknown) || errors.As(err, &nf) {
		return nil, api.ErrRepositoryUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", name, err)
	}
	sort.Strings(tags)
	return tags, nil
}

// Tag reads what repo:tag points to and when it was set (its link file's
// time).
func (s *storedContent) Tag(ctx context.Context, name, tag string) (api.StoredTag, error) {
	r, err := s.repo(ctx, name)
	if err != nil {
		return api.StoredTag{}, err
	}
	desc, err := r.Tags(ctx).Get(ctx, tag)
	var unknown distribution.ErrTagUnknown
	if errors.As(err, &unknown) {
		return api.StoredTag{}, fmt.Errorf("tag %s: %w", tag, trust.ErrNotFound)
	}
	if err != nil {
		return api.StoredTag{}, fmt.Errorf("resolve %s:%s: %w", name, tag, err)
	}
	t := api.StoredTag{Digest: desc.Digest}
	if fi, err := s.driver.Stat(ctx, path.Join("/docker/registry/v2/repositories", name, "_manifests/tags", tag, "current/link")); err == nil {
		t.Pushed = fi.ModTime()
	}
	m, err := s.manifest(ctx, r, desc.Digest)
	if err != nil {
		return api.StoredTag{}, err
	}
	t.MediaType, t.Size, t.Manifest = m.mediaType, m.size, m.payload
	return t, nil
}

// manifest reads manifest d once: its media type, bytes and size.
func (s *storedContent) manifest(ctx context.Context, r distribution.Repository, d digest.Digest) (manifestInfo, error) {
	s.mu.Lock()
	m, ok := s.manifests[d]
	s.mu.Unlock()
	if ok {
		return m, nil
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return manifestInfo{}, err
	}
	man, err := ms.Get(ctx, d)
	var unknownRev distribution.ErrManifestUnknownRevision
	if errors.As(err, &unknownRev) {
		return manifestInfo{}, fmt.Errorf("manifest %s: %w", d, trust.ErrNotFound)
	}
	if err != nil {
		return manifestInfo{}, fmt.Errorf("read manifest %s: %w", d, err)
	}
	mt, payload, err := man.Payload()
	if err != nil {
		return manifestInfo{}, err
	}
	m = manifestInfo{mediaType: mt, size: int64(len(payload)) + listedSize(payload), payload: payload}
	s.remember(d, m)
	return m, nil
}

// remember keeps m, emptying the cache first when m would take it over
// maxCachedManifestBytes.
func (s *storedContent) remember(d digest.Digest, m manifestInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.manifests[d]; ok {
		return
	}
	if s.cached+len(m.payload) > maxCachedManifestBytes {
		clear(s.manifests)
		s.cached = 0
	}
	s.manifests[d] = m
	s.cached += len(m.payload)
}

// listedSize sums the sizes of the descriptors a manifest lists: an
// image's config and layers, an index's manifests.
func listedSize(payload []byte) int64 {
	type desc struct {
		Size int64 `json:"size"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
	}
	if json.Unmarshal(payload, &m) != nil {
		return 0
	}
	var n int64
	if m.Config != nil {
		n += m.Config.Size
	}
	for _, d := range append(m.Layers, m.Manifests...) {
		n += max(d.Size, 0)
	}
	return n
}
