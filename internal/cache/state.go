package cache

import (
	"context"
	"encoding/json"
	"path"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/gc"
)

// The state of the caches in the storage backend, shared by replicas:
//
//	/portcullis/cache
//	└── <repository>                       dockerhub/library/alpine
//	    ├── _tags/<tag>                    {"digest": ..., "checked": ...}
//	    └── _manifests/<algorithm>/<hex>   {"pulled": ..., "size": ...}
const stateRoot = "/portcullis/cache"

// pulledEvery is how often a manifest's last pull time is written: eviction
// by age is that coarse. A cache whose maxAge is shorter writes it more
// often (cache.pulledEvery), or it would evict what is pulled all along.
const pulledEvery = time.Hour

// pulledEvery is how often the last pull time of a manifest of c is
// written: pulledEvery, or a quarter of c's maxAge when that is shorter.
func (c *cache) pulledEvery() time.Duration {
	if c.MaxAge > 0 && c.MaxAge/4 < pulledEvery {
		return c.MaxAge / 4
	}
	return pulledEvery
}

type tagState struct {
	Digest  digest.Digest `json:"digest"`
	Checked time.Time     `json:"checked"`
}

type manifestState struct {
	// Pulled is when the manifest was stored; its pulls are recorded by
	// gc.Pulls, and the later of the two counts.
	Pulled time.Time `json:"pulled"`
	// Size is the manifest's and its blobs' bytes, 0 until its blobs
	// are all stored.
	Size int64 `json:"size"`
}

// stateStore reads and writes the caches' shared state, remembering what
// it wrote so that each object is written at most once per interval.
type stateStore struct {
	driver storagedriver.StorageDriver
	now    func() time.Time
	pulls  *gc.Pulls

	tags sync.Map // name:tag → tagState, this replica's latest knowledge
}

func tagPath(name, tag string) string { return path.Join(stateRoot, name, "_tags", tag) }

func manifestPath(name string, d digest.Digest) string {
	return path.Join(stateRoot, name, "_manifests", d.Algorithm().String(), d.Encoded())
}

// checked returns when name:tag was last checked against the remote, by
// any replica; zero when never. The backend is read only when this
// replica's own knowledge is older than ttl.
func (st *stateStore) checked(ctx context.Context, name, tag string, ttl time.Duration) time.Time {
	var known time.Time
	if v, ok := st.tags.Load(name + ":" + tag); ok {
		known = v.(tagState).Checked
		if st.now().Sub(known) < ttl {
			return known
		}
	}
	// Another replica may have checked it since: read the backend only
	// when our own knowledge is not enough.
	b, err := st.driver.GetContent(ctx, tagPath(name, tag))
	if err != nil {
		return known
	}
	var ts tagState
	if json.Unmarshal(b, &ts) != nil {
		return known
	}
	if ts.Checked.After(known) {
		st.tags.Store(name+":"+tag, ts)
		return ts.Checked
	}
	return known
}

// check records that name:tag was found to be d on the remote now.
func (st *stateStore) check(ctx context.Context, name, tag string, d digest.Digest) {
	ts := tagState{Digest: d, Checked: st.now().UTC()}
	st.tags.Store(name+":"+tag, ts)
	b, _ := json.Marshal(ts)
	_ = st.driver.PutContent(ctx, tagPath(name, tag), b)
}

// pulled records that manifest d of name was read, at most once per
// every, where retention finds pull times too.
func (st *stateStore) pulled(ctx context.Context, every time.Duration, name string, d digest.Digest) {
	_ = st.pulls.RecordEvery(ctx, name, d, every)
}

// sized records the bytes manifest d of name holds.
func (st *stateStore) sized(ctx context.Context, name string, d digest.Digest, size int64) {
	ms := st.read(ctx, name, d)
	if ms.Pulled.IsZero() {
		ms.Pulled = st.now().UTC()
	}
	ms.Size = size
	st.write(ctx, name, d, ms)
}

func (st *stateStore) read(ctx context.Context, name string, d digest.Digest) manifestState {
	var ms manifestState
	if b, err := st.driver.GetContent(ctx, manifestPath(name, d)); err == nil {
		_ = json.Unmarshal(b, &ms)
	}
	return ms
}

func (st *stateStore) write(ctx context.Context, name string, d digest.Digest, ms manifestState) {
	b, _ := json.Marshal(ms)
	_ = st.driver.PutContent(ctx, manifestPath(name, d), b)
}

// forget removes the state of manifest d of name and of the tags given.
func (st *stateStore) forget(ctx context.Context, name string, d digest.Digest, tags []string) {
	_ = st.driver.Delete(ctx, manifestPath(name, d))
	for _, t := range tags {
		st.tags.Delete(name + ":" + t)
		_ = st.driver.Delete(ctx, tagPath(name, t))
	}
	st.pulls.Forget(ctx, name, d)
}

// cachedManifest is one manifest record of a cache.
type cachedManifest struct {
	Repository string
	Digest     digest.Digest
	manifestState
}

// manifests lists the manifest records under prefix.
func (st *stateStore) manifests(ctx context.Context, prefix string) ([]cachedManifest, error) {
	var out []cachedManifest
	root := path.Join(stateRoot, prefix)
	err := st.driver.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		p := fi.Path()
		i := strings.LastIndex(p, "/_manifests/")
		if i < 0 {
			return nil
		}
		rest := strings.Split(p[i+len("/_manifests/"):], "/")
		if len(rest) != 2 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(rest[0]), rest[1])
		if d.Validate() != nil {
			return nil
		}
		var ms manifestState
		if b, err := st.driver.GetContent(ctx, p); err == nil {
			_ = json.Unmarshal(b, &ms)
		}
		repo := strings.TrimPrefix(p[:i], stateRoot+"/")
		if last, err := st.pulls.Last(ctx, repo, d); err == nil && last.After(ms.Pulled) {
			ms.Pulled = last
		}
		out = append(out, cachedManifest{Repository: repo, Digest: d, manifestState: ms})
		return nil
	})
	if _, ok := err.(storagedriver.PathNotFoundError); ok {
		return nil, nil
	}
	return out, err
}
