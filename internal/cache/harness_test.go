package cache_test

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/replication"
)

// upstream is go-containerregistry's in-memory registry behind a handler
// that counts requests per method and path and lets a test inject faults.
type upstream struct {
	t   *testing.T
	srv *httptest.Server
	reg http.Handler

	mu     sync.Mutex
	counts map[string]int // "METHOD /v2/..." → requests
	fault  func(w http.ResponseWriter, r *http.Request) bool
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{t: t, counts: map[string]int{},
		reg: registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))}
	u.srv = httptest.NewServer(u)
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.counts[r.Method+" "+r.URL.Path]++
	fault := u.fault
	u.mu.Unlock()
	if fault != nil && fault(w, r) {
		return
	}
	u.reg.ServeHTTP(w, r)
}

// setFault installs f, which answers a request (returning true) or lets
// it through; nil removes it.
func (u *upstream) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fault = f
}

// count returns the requests whose method is method ("" any) and whose
// path contains part.
func (u *upstream) count(method, part string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for k, c := range u.counts {
		m, p, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.Contains(p, part) {
			n += c
		}
	}
	return n
}

// reset forgets the requests counted so far.
func (u *upstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	clear(u.counts)
}

// direct returns a reference to repo:ref (or repo@digest) on the in-memory registry
// directly, bypassing counting and faults.
func (u *upstream) direct(repo, ref string) name.Reference {
	u.t.Helper()
	srv := httptest.NewServer(u.reg)
	u.t.Cleanup(srv.Close)
	sep := ":"
	if strings.Contains(ref, ":") {
		sep = "@"
	}
	r, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/"+repo+sep+ref, name.Insecure)
	if err != nil {
		u.t.Fatal(err)
	}
	return r
}

// push writes img to repo:tag upstream and returns its digest.
func (u *upstream) push(repo, tag string, img ggcrv1.Image) digest.Digest {
	u.t.Helper()
	if err := remote.Write(u.direct(repo, tag), img); err != nil {
		u.t.Fatalf("push %s:%s upstream: %v", repo, tag, err)
	}
	d, err := img.Digest()
	if err != nil {
		u.t.Fatal(err)
	}
	return digest.Digest(d.String())
}

// pushIndex writes idx to repo:tag upstream and returns its digest.
func (u *upstream) pushIndex(repo, tag string, idx ggcrv1.ImageIndex) digest.Digest {
	u.t.Helper()
	if err := remote.WriteIndex(u.direct(repo, tag), idx); err != nil {
		u.t.Fatalf("push index %s:%s upstream: %v", repo, tag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		u.t.Fatal(err)
	}
	return digest.Digest(d.String())
}

func randomImage(t *testing.T, size int64, layers int) ggcrv1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// repos opens repositories through the middleware the registry uses
// (sha512 links, the referrers index), as internal/app does.
type repos struct {
	ns    distribution.Namespace
	idx   *referrers.Index
	links *digests.Links
	hook  *tagHook
}

func (r repos) Repository(ctx context.Context, n reference.Named) (distribution.Repository, error) {
	repo, err := r.ns.Repository(ctx, n)
	if err != nil {
		return nil, err
	}
	return hookedRepo{Repository: referrers.Wrap(digests.Wrap(repo, r.links), r.idx), name: n.Name(), hook: r.hook}, nil
}

// tagHook is called before each tag the cache sets, to check what is
// stored at that moment.
type tagHook struct {
	mu sync.Mutex
	fn func(repo, tag string)
}

func (h *tagHook) set(fn func(repo, tag string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fn = fn
}

func (h *tagHook) call(repo, tag string) {
	h.mu.Lock()
	fn := h.fn
	h.mu.Unlock()
	if fn != nil {
		fn(repo, tag)
	}
}

type hookedRepo struct {
	distribution.Repository
	name string
	hook *tagHook
}

func (r hookedRepo) Tags(ctx context.Context) distribution.TagService {
	return hookedTags{TagService: r.Repository.Tags(ctx), name: r.name, hook: r.hook}
}

type hookedTags struct {
	distribution.TagService
	name string
	hook *tagHook
}

func (t hookedTags) Tag(ctx context.Context, tag string, desc distribution.Descriptor) error {
	t.hook.call(t.name, tag)
	return t.TagService.Tag(ctx, tag, desc)
}

// events records the events of the cache and checks, as each is appended,
// that the blobs of the manifest it names are stored.
type events struct {
	repos cache.Repositories

	mu       sync.Mutex
	list     []outbox.Event
	problems []string
	appended chan struct{} // one token per event
}

func (e *events) Append(ctx context.Context, ev outbox.Event) (uint64, error) {
	problem := ""
	if ev.Kind == outbox.KindPush || ev.Kind == outbox.KindTag {
		problem = missingBlobs(ctx, e.repos, ev.Repository, ev.Digest)
	}
	e.mu.Lock()
	e.list = append(e.list, ev)
	if problem != "" {
		e.problems = append(e.problems, problem)
	}
	n := len(e.list)
	e.mu.Unlock()
	e.appended <- struct{}{}
	return uint64(n), nil
}

// missingBlobs says which blob of manifest d of repo is not stored, ""
// when none is.
func missingBlobs(ctx context.Context, rs cache.Repositories, repo string, d digest.Digest) string {
	named, err := reference.WithName(repo)
	if err != nil {
		return err.Error()
	}
	r, err := rs.Repository(ctx, named)
	if err != nil {
		return err.Error()
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return err.Error()
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return "event for manifest " + d.String() + " not stored: " + err.Error()
	}
	mt, _, _ := m.Payload()
	if strings.Contains(mt, "index") || strings.Contains(mt, "list") {
		return ""
	}
	for _, b := range m.References() {
		if _, err := r.Blobs(ctx).Stat(ctx, b.Digest); err != nil {
			return "event for " + repo + "@" + d.String() + " before its blob " + b.Digest.String() + " was stored"
		}
	}
	return ""
}

// wait waits until an event matching match has been appended and returns
// it.
func (e *events) wait(t *testing.T, match func(outbox.Event) bool) outbox.Event {
	t.Helper()
	timeout := time.After(30 * time.Second) // a failure guard, not synchronisation
	for {
		e.mu.Lock()
		for _, ev := range e.list {
			if match(ev) {
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
		select {
		case <-e.appended:
		case <-timeout:
			t.Fatalf("no matching event; events: %+v", e.all())
		}
	}
}

func (e *events) all() []outbox.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]outbox.Event(nil), e.list...)
}

func (e *events) checkProblems(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.problems {
		t.Error(p)
	}
}

// env is a cache engine over a filesystem storage in a temporary
// directory, filling from an upstream through a real replication.Remote.
type env struct {
	t       *testing.T
	set     *cache.Set
	up      *upstream
	remote  *replication.Remote
	repos   repos
	clock   *clock
	events  *events
	metrics *prometheus.Registry
}

// prefix is the engine's cache namespace, remoteName its remote's name.
const (
	prefix     = "hub"
	remoteName = "origin"
)

// newEnv starts a cache "hub" of an upstream; adjust changes its spec.
func newEnv(t *testing.T, adjust func(*cache.Spec)) *env {
	t.Helper()
	ctx := context.Background()
	up := newUpstream(t)
	clk := &clock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	rem, err := replication.New(replication.Options{Name: remoteName, URL: up.srv.URL, FailureThreshold: 1000})
	if err != nil {
		t.Fatal(err)
	}
	driver := filesystem.New(filesystem.DriverParameters{RootDirectory: t.TempDir(), MaxThreads: 100})
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := referrers.NewIndex(driver)
	if err != nil {
		t.Fatal(err)
	}
	links, err := digests.NewLinks(driver)
	if err != nil {
		t.Fatal(err)
	}
	rs := repos{ns: ns, idx: idx, links: links, hook: &tagHook{}}
	ev := &events{repos: rs, appended: make(chan struct{}, 1024)}
	reg := prometheus.NewRegistry()
	spec := cache.Spec{Prefix: prefix, Remote: rem, TagTTL: 5 * time.Minute, StaleIfError: time.Hour}
	if adjust != nil {
		adjust(&spec)
	}
	set, err := cache.New([]cache.Spec{spec}, cache.Options{
		Repos: rs, Driver: driver, Events: ev, Referrers: idx, Metrics: reg, Now: clk.Now,
		SpoolDir:   t.TempDir(),
		WriteError: func(w http.ResponseWriter, r *http.Request, err error) { api.WriteError(w, r, nil, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = set.Run(runCtx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		set.Wait()
		ev.checkProblems(t)
	})
	return &env{t: t, set: set, up: up, remote: rem, repos: rs, clock: clk, events: ev, metrics: reg}
}

func (e *env) repo(name string) distribution.Repository {
	e.t.Helper()
	named, err := reference.WithName(name)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := e.repos.Repository(context.Background(), named)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// manifest returns the stored bytes of manifest d of name, nil when it is
// not stored.
func (e *env) manifest(name string, d digest.Digest) []byte {
	e.t.Helper()
	ctx := context.Background()
	ms, err := e.repo(name).Manifests(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if ok, _ := ms.Exists(ctx, d); !ok {
		return nil
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		e.t.Fatal(err)
	}
	_, payload, _ := m.Payload()
	return payload
}

// tag returns the digest name:tag points to, "" when it is not set.
func (e *env) tag(name, tag string) digest.Digest {
	e.t.Helper()
	ctx := context.Background()
	desc, err := e.repo(name).Tags(ctx).Get(ctx, tag)
	if err != nil {
		return ""
	}
	return desc.Digest
}

// hasBlob reports whether name holds blob d.
func (e *env) hasBlob(name string, d digest.Digest) bool {
	e.t.Helper()
	ctx := context.Background()
	_, err := e.repo(name).Blobs(ctx).Stat(ctx, d)
	return err == nil
}

// pull reads name:ref through the cache, failing the test on an error.
func (e *env) pull(name, ref string) cache.Result {
	e.t.Helper()
	res, err := e.set.Manifest(context.Background(), name, ref)
	if err != nil {
		e.t.Fatalf("Manifest(%s, %s): %v", name, ref, err)
	}
	return res
}

// waitComplete waits for the event of manifest d of name (all its blobs
// stored).
func (e *env) waitComplete(name string, d digest.Digest) outbox.Event {
	e.t.Helper()
	return e.events.wait(e.t, func(ev outbox.Event) bool { return ev.Repository == name && ev.Digest == d })
}

// counter returns the value of the counter name with labels, 0 when it
// has none.
func (e *env) counter(metric string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// unavailable answers every request with 503.
func unavailable(w http.ResponseWriter, _ *http.Request) bool {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}`)
	return true
}

// clientError returns what a client is told for err: the status and OCI
// code and message of a *cache.Error or an errcode.Error.
func clientError(t *testing.T, err error) (int, string, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	api.WriteError(rec, httptest.NewRequest(http.MethodGet, "/v2/", nil), nil, err)
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("error body %q: %v", rec.Body.String(), err)
	}
	return rec.Code, body.Errors[0].Code, body.Errors[0].Message
}
