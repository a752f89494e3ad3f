package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/internal/gc"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/replication"
)

// Upstream is the registry a cache fills from.
type Upstream interface {
	Name() string
	URL() string
	State() replication.State
	HeadManifest(ctx context.Context, repo, ref string) (replication.Descriptor, error)
	GetManifest(ctx context.Context, repo, ref string) (replication.Descriptor, []byte, error)
	GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error)
	HeadBlob(ctx context.Context, repo string, d digest.Digest) (replication.Descriptor, error)
	Referrers(ctx context.Context, repo string, d digest.Digest) ([]v1.Descriptor, error)
}

// Repositories opens repositories of the registry's storage through the
// middleware that keeps the referrers index.
type Repositories interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}

// ReferrerLister lists the referrers a repository holds of a subject.
type ReferrerLister interface {
	List(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error)
}

// Events receives the event of each cached manifest, as a push would
// produce it.
type Events interface {
	Append(ctx context.Context, e outbox.Event) (uint64, error)
}

// Spec is one cache's configuration.
type Spec struct {
	// Prefix is the namespace served (dockerhub).
	Prefix string
	// Remote is the upstream registry.
	Remote Upstream
	// Hosts are the ?ns= values routed to this cache.
	Hosts []string
	// DockerHub puts one-word names under library/.
	DockerHub bool
	// TagTTL, StaleIfError, MaxAge and MaxSize: see config.Cache.
	TagTTL       time.Duration
	StaleIfError time.Duration
	MaxAge       time.Duration
	MaxSize      int64
}

// Options are the caches' shared parts.
type Options struct {
	Repos  Repositories
	Driver storagedriver.StorageDriver
	Events Events
	// Referrers lists the referrers of a manifest, for eviction.
	Referrers ReferrerLister
	// EvictEvery is how often bounded caches are checked; default 10m.
	EvictEvery time.Duration
	// WriteError writes the errors of ServeBlob (required).
	WriteError ErrorWriter
	// SpoolDir holds blobs being fetched (node-local, this process's
	// alone: what it holds at start is removed); default a new temporary
	// directory.
	SpoolDir string
	// Pulls records manifest pulls, shared with retention; default one of
	// the cache's own over Driver.
	Pulls *gc.Pulls
	// Metrics registers the cache metrics when set.
	Metrics prometheus.Registerer
	Log     *slog.Logger
	Now     func() time.Time
}

// Set is every cache of the registry.
type Set struct {
	caches     []*cache
	repos      Repositories
	events     Events
	refs       ReferrerLister
	errWriter  ErrorWriter
	driver     storagedriver.StorageDriver
	evictEvery time.Duration
	state      *stateStore
	blobs      *fetcher
	fills      flights
	missing    missingTags // tags the remotes said they lack, briefly
	metrics    *metrics
	log        *slog.Logger
	now        func() time.Time

	// ctx bounds fetches that outlive the request that started them; set
	// by Run, the Set's lifetime before.
	mu     sync.Mutex
	ctx    context.Context
	checks map[string]time.Time // name@digest → when its referrers were last fetched

	heldCounts heldCounts

	// background counts the fills, blob fetches and image completions
	// running detached from the requests that started them.
	background sync.WaitGroup
}

type cache struct {
	Spec
	prefixSlash string
}

// Errors returned by the Set.
var (
	// ErrUnknownNamespace is returned by Route for an ns no cache serves.
	ErrUnknownNamespace = errors.New("no cache serves this registry host")
)

// New returns the caches of specs. It returns an error for a spec without
// a prefix or remote, or missing shared parts.
func New(specs []Spec, o Options) (*Set, error) {
	if o.Repos == nil || o.Driver == nil || o.WriteError == nil {
		return nil, errors.New("cache: repositories, a storage driver and an error writer are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Pulls == nil {
		p, err := gc.NewPulls(o.Driver, o.Now, 0)
		if err != nil {
			return nil, err
		}
		o.Pulls = p
	}
	if o.SpoolDir == "" {
		dir, err := os.MkdirTemp("", "portcullis-cache-spool-")
		if err != nil {
			return nil, fmt.Errorf("cache spool directory: %w", err)
		}
		o.SpoolDir = dir
	} else {
		if err := os.MkdirAll(o.SpoolDir, 0o700); err != nil {
			return nil, fmt.Errorf("cache spool directory: %w", err)
		}
		// Spools of fetches a crash interrupted: nothing was committed
		// from them, and nobody reads them (the directory is this
		// process's: one registry per data directory).
		if old, err := filepath.Glob(filepath.Join(o.SpoolDir, "blob-*")); err == nil {
			for _, p := range old {
				_ = os.Remove(p)
			}
		}
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, err
	}
	if o.EvictEvery <= 0 {
		o.EvictEvery = evictEvery
	}
	s := &Set{repos: o.Repos, events: o.Events, refs: o.Referrers, driver: o.Driver, errWriter: o.WriteError, evictEvery: o.EvictEvery, state: &stateStore{driver: o.Driver, now: o.Now, pulls: o.Pulls},
		metrics: m, log: o.Log, now: o.Now, ctx: context.Background(), checks: map[string]time.Time{}}
	s.blobs = &fetcher{set: s, dir: o.SpoolDir, slots: make(chan struct{}, maxFetches), inflight: map[string]*fetch{}}
	for i, sp := range specs {
		if sp.Prefix == "" || sp.Remote == nil {
			return nil, fmt.Errorf("cache %d: a prefix and a remote are required", i)
		}
		s.caches = append(s.caches, &cache{Spec: sp, prefixSlash: sp.Prefix + "/"})
	}
	return s, nil
}

// Run keeps the caches within their bounds (eviction) until ctx ends; fetches
// started by clients run under ctx, not under the clients' requests.
func (s *Set) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	return s.evictLoop(ctx)
}

// Wait waits for the work that outlives the requests that started it
// (manifest fills, blob fetches, the completion of cached images) to end.
// Cancel the context given to Run first to make it stop early; call Wait
// when no more requests are served, before the storage or the event
// outbox is closed.
func (s *Set) Wait() { s.background.Wait() }

func (s *Set) lifetime() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

// owner returns the cache whose namespace holds name.
func (s *Set) owner(name string) *cache {
	for _, c := range s.caches {
		if strings.HasPrefix(name, c.prefixSlash) {
			return c
		}
	}
	return nil
}

// Owns reports whether name is in a cache namespace.
func (s *Set) Owns(name string) bool { return s != nil && s.owner(name) != nil }

// Describe says what a cache namespace is, for the refusal of a write.
func (s *Set) Describe(name string) string {
	c := s.owner(name)
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s is in %s/, a read-only pull-through cache of remote %s (%s): push to a repository outside %s/",
		name, c.Prefix, c.Remote.Name(), c.Remote.URL(), c.Prefix)
}

// Canonical returns the repository name under which name is cached: Docker
// Hub's one-word names gain library/ (dockerhub/alpine is
// dockerhub/library/alpine). Names outside every cache are returned as is.
func (s *Set) Canonical(name string) string {
	c := s.owner(name)
	if c == nil || !c.DockerHub {
		return name
	}
	rest := name[len(c.prefixSlash):]
	if !strings.Contains(rest, "/") {
		return c.prefixSlash + "library/" + rest
	}
	return name
}

// Route maps a repository requested through a mirror of host ns (containerd
// sends ?ns=docker.io) to the cached repository. It returns
// ErrUnknownNamespace when no cache serves ns: nothing is dialled for it.
func (s *Set) Route(ns, name string) (string, error) {
	ns = strings.ToLower(ns)
	for _, c := range s.caches {
		for _, h := range c.Hosts {
			if h == ns {
				return s.Canonical(c.prefixSlash + name), nil
			}
		}
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownNamespace, ns)
}

// upstreamName is name's repository on the remote.
func (c *cache) upstreamName(name string) string { return strings.TrimPrefix(name, c.prefixSlash) }

func (s *Set) repository(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, fmt.Errorf("repository name %q: %w", name, err)
	}
	return s.repos.Repository(ctx, named)
}

// Aliases returns the name the remote has for name's repository when name
// is cached (dockerhub/library/alpine: library/alpine), for signatures
// that name the repository they were made for; nil otherwise.
func (s *Set) Aliases(name string) []string {
	if s == nil {
		return nil
	}
	c := s.owner(name)
	if c == nil {
		return nil
	}
	return []string{c.upstreamName(name)}
}
