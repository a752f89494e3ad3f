package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/replicate"
	"github.com/portcullis/portcullis/replication"
)

// testRepos opens repositories with the referrers index, and lists them.
type testRepos struct {
	ns  distribution.Namespace
	idx *referrers.Index
}

func (r testRepos) Repository(ctx context.Context, n reference.Named) (distribution.Repository, error) {
	repo, err := r.ns.Repository(ctx, n)
	if err != nil {
		return nil, err
	}
	return referrers.Wrap(repo, r.idx), nil
}

func (r testRepos) Enumerate(ctx context.Context, ingester func(string) error) error {
	err := r.ns.(distribution.RepositoryEnumerator).Enumerate(ctx, ingester)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

// site is the other registry: go-containerregistry's in-memory registry
// behind a handler that counts writes and can refuse them.
type site struct {
	srv    *httptest.Server
	reg    http.Handler
	mu     sync.Mutex
	writes map[string]int // "METHOD path"
	refuse func(r *http.Request) bool
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	refuse := s.refuse
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writes[r.Method+" "+r.URL.Path]++
	}
	s.mu.Unlock()
	if refuse != nil && refuse(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"no trusted signature"}]}`)
		return
	}
	s.reg.ServeHTTP(w, r)
}

func (s *site) count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[method+" "+path]
}

// harness is a Service over in-memory storage with one push rule (event)
// and one pull rule (manual) to a site.
type harness struct {
	t     *testing.T
	svc   *replicate.Service
	local *replicate.Local
	site  *site
	rem   *replication.Remote
	meta  *bolt.DB
	opts  replicate.Options
}

func newHarness(t *testing.T, rules ...config.ReplicationRule) *harness {
	t.Helper()
	return newHarnessWith(t, nil, rules...)
}

// newHarnessWith is newHarness with more remotes, by name.
func newHarnessWith(t *testing.T, more map[string]*replication.Remote, rules ...config.ReplicationRule) *harness {
	t.Helper()
	ctx := t.Context()
	driver := inmemory.New()
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := referrers.NewIndex(driver)
	if err != nil {
		t.Fatal(err)
	}
	repos := testRepos{ns: ns, idx: idx}
	refs, err := referrers.NewHandler(idx, ns, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st := &site{writes: map[string]int{}, reg: registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))}
	st.srv = httptest.NewServer(st)
	t.Cleanup(st.srv.Close)
	rem, err := replication.New(replication.Options{Name: "site-b", URL: st.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meta.Close() })
	cfg := config.Replication{Rules: append([]config.ReplicationRule(nil), rules...), Accounts: []string{"site-b-robot"}}
	c := config.Default()
	c.Remotes = []config.Remote{{Name: "site-b", URL: st.srv.URL}}
	remotes := map[string]*replication.Remote{"site-b": rem}
	for name, r := range more {
		c.Remotes = append(c.Remotes, config.Remote{Name: name, URL: r.URL()})
		remotes[name] = r
	}
	c.Replication = cfg
	c.Provision()
	local := &replicate.Local{Repos: repos, Refs: refs}
	opts := replicate.Options{Config: c.Replication, Remotes: remotes, Local: local, Catalog: repos, Driver: driver, Metadata: meta}
	svc, err := replicate.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, svc: svc, local: local, site: st, rem: rem, meta: meta, opts: opts}
}

// replica returns another replica's service over the same storage.
func (h *harness) replica() *replicate.Service {
	h.t.Helper()
	svc, err := replicate.New(h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return svc
}

// pushLocal stores a random image as repo:tag here, as a pull would.
func (h *harness) pushLocal(repo, tag string) string {
	h.t.Helper()
	src := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer src.Close()
	img, err := random.Image(256, 1)
	if err != nil {
		h.t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(src.URL, "http://") + "/" + repo + ":" + tag)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		h.t.Fatal(err)
	}
	from, err := replication.New(replication.Options{Name: "src", URL: src.URL})
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := replication.NewCopier(from, h.local).Copy(h.t.Context(), repo, repo, tag)
	if err != nil {
		h.t.Fatalf("seed %s:%s: %v", repo, tag, err)
	}
	return string(res.Digest)
}

// remoteDigest is repo:tag's digest at the site, "" when it has none.
func (h *harness) remoteDigest(repo, tag string) string {
	d, err := h.rem.HeadManifest(h.t.Context(), repo, tag)
	if err != nil {
		return ""
	}
	return string(d.Digest)
}

var pushRule = config.ReplicationRule{Name: "to-b", Mode: "push", Remote: "site-b", Repositories: []string{"prod/**"},
	Tags: []string{"v*"}, Deletes: true}

func tagEvent(repo, tag, pusher string) outbox.Entry {
	return outbox.Entry{Seq: 1, Event: outbox.Event{Kind: outbox.KindTag, Repository: repo, Tag: tag, Pusher: pusher, Time: time.Now()}}
}

func TestEventsFollowRulesAndSkipOtherSites(t *testing.T) {
	t.Parallel()
	h := newHarness(t, pushRule)
	d := h.pushLocal("prod/app", "v1")
	h.pushLocal("prod/app", "latest")
	h.pushLocal("dev/app", "v1")
	ctx := t.Context()
	for _, e := range []outbox.Entry{
		tagEvent("prod/app", "v1", "site-b-robot"), // pushed here by the other site: not sent back
		tagEvent("prod/app", "latest", "alice"),    // no tag pattern matches
		tagEvent("dev/app", "v1", "alice"),         // no repository pattern matches
	} {
		if err := h.svc.Handle(ctx, e); err != nil {
			t.Fatalf("handle %+v: %v", e.Event, err)
		}
	}
	for _, ref := range [][2]string{{"prod/app", "v1"}, {"prod/app", "latest"}, {"dev/app", "v1"}} {
		if got := h.remoteDigest(ref[0], ref[1]); got != "" {
			t.Errorf("%s:%s replicated (%s), want not", ref[0], ref[1], got)
		}
	}
	if err := h.svc.Handle(ctx, tagEvent("prod/app", "v1", "alice")); err != nil {
		t.Fatal(err)
	}
	if got := h.remoteDigest("prod/app", "v1"); got != d {
		t.Errorf("prod/app:v1 at the site: %q, want %s", got, d)
	}
	// A deletion is replicated (the rule says deletes: true).
	del := outbox.Entry{Seq: 2, Event: outbox.Event{Kind: outbox.KindDelete, Repository: "prod/app", Tag: "v1", Pusher: "alice"}}
	if err := h.svc.Handle(ctx, del); err != nil {
		t.Fatal(err)
	}
	if got := h.remoteDigest("prod/app", "v1"); got != "" {
		t.Errorf("prod/app:v1 still at the site after its deletion: %s", got)
	}
}

func TestRefusalIsRecordedAndNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, pushRule)
	d := h.pushLocal("prod/app", "v1")
	tagPath := "/v2/prod/app/manifests/v1"
	h.site.refuse = func(r *http.Request) bool { return r.Method == http.MethodPut && r.URL.Path == tagPath }
	if err := h.svc.Handle(t.Context(), tagEvent("prod/app", "v1", "alice")); err != nil {
		t.Fatalf("a refusal must finish the event, got %v", err)
	}
	st := h.svc.Status(t.Context())
	want := []replicate.Failure{{Repository: "prod/app", Tag: "v1", Digest: digest.Digest(d),
		Error: "DENIED: no trusted signature", Permanent: true, Attempts: 1}}
	if diff := cmp.Diff(want, st[0].Failures, cmpIgnoreTimes); diff != "" {
		t.Errorf("failures (-want +got):\n%s", diff)
	}
	// The reconcile does not send it again while the image is unchanged.
	rep, err := h.svc.RunRule(t.Context(), "to-b")
	if err != nil {
		t.Fatal(err)
	}
	if n := h.site.count(http.MethodPut, tagPath); n != 1 {
		t.Errorf("tag PUTs after a reconcile: %d, want 1 (no retry of a refusal); run %+v", n, rep)
	}
	// Once the site accepts it (a signature arrived), the next event lands it.
	h.site.refuse = nil
	if err := h.svc.Handle(t.Context(), tagEvent("prod/app", "v1", "alice")); err != nil {
		t.Fatal(err)
	}
	if got := h.remoteDigest("prod/app", "v1"); got != d {
		t.Errorf("prod/app:v1 at the site: %q, want %s", got, d)
	}
	if f := h.svc.Status(t.Context())[0].Failures; len(f) != 0 {
		t.Errorf("failures left: %+v", f)
	}
}

func TestRunRuleReconcilesAndPulls(t *testing.T) {
	t.Parallel()
	pull := config.ReplicationRule{Name: "from-b", Mode: "pull", Remote: "site-b", Repositories: []string{"mirror/app"}, Trigger: "manual"}
	h := newHarness(t, pushRule, pull)
	d1, d2 := h.pushLocal("prod/app", "v1"), h.pushLocal("prod/app", "v2")
	rep, err := h.svc.RunRule(t.Context(), "to-b")
	if err != nil {
		t.Fatal(err)
	}
	if h.remoteDigest("prod/app", "v1") != d1 || h.remoteDigest("prod/app", "v2") != d2 || rep.Copied != 2 {
		t.Errorf("after a reconcile: v1 %q, v2 %q, run %+v", h.remoteDigest("prod/app", "v1"), h.remoteDigest("prod/app", "v2"), rep)
	}
	// Quiet once converged: a second run writes nothing.
	before := len(h.site.writes)
	if rep, err = h.svc.RunRule(t.Context(), "to-b"); err != nil || rep.Copied != 0 {
		t.Errorf("second run: %+v %v, want nothing copied", rep, err)
	}
	if len(h.site.writes) != before {
		t.Errorf("second run wrote to the site: %v", h.site.writes)
	}
	// A tag deleted here is deleted there.
	if err := h.local.DeleteTag(t.Context(), "prod/app", "v2"); err != nil {
		t.Fatal(err)
	}
	if rep, err = h.svc.RunRule(t.Context(), "to-b"); err != nil || rep.Deleted != 1 || h.remoteDigest("prod/app", "v2") != "" {
		t.Errorf("after deleting v2 here: run %+v %v, v2 there %q", rep, err, h.remoteDigest("prod/app", "v2"))
	}

	// Pull: what the site has is fetched.
	from, err := replication.New(replication.Options{Name: "b", URL: h.site.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, err := replication.NewCopier(h.local, from).Copy(t.Context(), "prod/app", "mirror/app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RunRule(t.Context(), "from-b"); err != nil {
		t.Fatal(err)
	}
	if got, err := h.local.HeadManifest(t.Context(), "mirror/app", "v1"); err != nil || got.Digest != res.Digest {
		t.Errorf("pulled mirror/app:v1: %v %v, want %s", got.Digest, err, res.Digest)
	}
	if _, err := h.svc.RunRule(t.Context(), "nope"); !errors.Is(err, replicate.ErrUnknownRule) {
		t.Errorf("RunRule of an unknown rule: %v", err)
	}
}

// TestLocalRefusesScannerArtifacts: a manifest of a type reserved for the
// scanner (a remote's scan report) is never stored here by a copy.
func TestLocalRefusesScannerArtifacts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	report := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"artifactType":"application/vnd.portcullis.scan.report.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
	_, err := h.local.PutManifest(t.Context(), "prod/app", digest.FromString(report).String(), "application/vnd.oci.image.manifest.v1+json", []byte(report))
	if !errors.Is(err, replication.ErrDenied) || !replication.Permanent(err) {
		t.Errorf("PutManifest of a scan report: %v, want a permanent refusal", err)
	}
}

// pushSite stores a random image as repo:tag at the site.
func (h *harness) pushSite(repo, tag string) string {
	h.t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		h.t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(h.site.srv.URL, "http://") + "/" + repo + ":" + tag)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		h.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		h.t.Fatal(err)
	}
	return d.String()
}

// TestPullPatterns: a pull rule with a pattern fetches the repositories of
// the remote's catalog it matches (never a reserved one), and says in its
// status when the remote refuses its catalog.
func TestPullPatterns(t *testing.T) {
	t.Parallel()
	pull := config.ReplicationRule{Name: "from-b", Mode: "pull", Remote: "site-b", Repositories: []string{"team/**", "named/app"}, Trigger: "manual"}
	h := newHarness(t, pull)
	h.local.Reserved = []string{"portcullis/vulndb"}
	want := map[string]string{"team/a": h.pushSite("team/a", "v1"), "team/sub/b": h.pushSite("team/sub/b", "v1"), "named/app": h.pushSite("named/app", "v1")}
	h.pushSite("other/c", "v1")
	h.pushSite("portcullis/vulndb", "latest")
	ctx := t.Context()
	rep, err := h.svc.RunRule(ctx, "from-b")
	if err != nil || rep.Copied != 3 || rep.Failed != 0 {
		t.Errorf("run: %+v %v, want 3 copied", rep, err)
	}
	for repo, d := range want {
		if got, err := h.local.HeadManifest(ctx, repo, "v1"); err != nil || string(got.Digest) != d {
			t.Errorf("%s:v1 here: %v %v, want %s", repo, got.Digest, err, d)
		}
	}
	for _, ref := range []string{"other/c:v1", "portcullis/vulndb:latest"} {
		repo, tag, _ := strings.Cut(ref, ":")
		if _, err := h.local.HeadManifest(ctx, repo, tag); !errors.Is(err, replication.ErrNotFound) {
			t.Errorf("%s here: %v, want not fetched", ref, err)
		}
	}

	// The remote refuses its catalog: the status says so, and the named
	// repository is still fetched.
	h.site.refuse = func(r *http.Request) bool { return r.URL.Path == "/v2/_catalog" }
	d2 := h.pushSite("named/app", "v2")
	if rep, err = h.svc.RunRule(ctx, "from-b"); err != nil || rep.Failed != 1 || rep.Copied != 1 {
		t.Errorf("run with the catalog refused: %+v %v, want 1 copied and 1 failed", rep, err)
	}
	if got, err := h.local.HeadManifest(ctx, "named/app", "v2"); err != nil || string(got.Digest) != d2 {
		t.Errorf("named/app:v2 here: %v %v, want %s", got.Digest, err, d2)
	}
	f := h.svc.Status(ctx)[0].Failures
	if len(f) != 1 || f[0].Repository != "team/**" || f[0].Error != "list the remote's catalog: DENIED: no trusted signature" {
		t.Errorf("failures: %+v, want the catalog's refusal under team/**", f)
	}
	h.site.refuse = nil
	if _, err := h.svc.RunRule(ctx, "from-b"); err != nil {
		t.Fatal(err)
	}
	if f := h.svc.Status(ctx)[0].Failures; len(f) != 0 {
		t.Errorf("failures after the catalog is listed again: %+v", f)
	}
}

// TestRulesProgressApart: two event rules over the same repositories, one
// to a remote that never answers: the other rule's events all arrive
// meanwhile, and the dead rule's stay pending in its own outbox.
func TestRulesProgressApart(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(dead.Close)
	t.Cleanup(func() { close(release) })
	deadRemote, err := replication.New(replication.Options{Name: "dead", URL: dead.URL})
	if err != nil {
		t.Fatal(err)
	}
	toDead := config.ReplicationRule{Name: "to-dead", Mode: "push", Remote: "dead", Repositories: []string{"prod/**"}}
	toB := config.ReplicationRule{Name: "to-b", Mode: "push", Remote: "site-b", Repositories: []string{"prod/**"}}
	h := newHarnessWith(t, map[string]*replication.Remote{"dead": deadRemote}, toDead, toB)
	box, err := outbox.New(h.meta, replicate.OutboxName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Follow(box); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	want := map[string]string{}
	for i := range 12 {
		repo := fmt.Sprintf("prod/app-%d", i)
		want[repo] = h.pushLocal(repo, "v1")
		if _, err := box.Append(ctx, tagEvent(repo, "v1", "alice").Event); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := 0
		for repo, d := range want {
			if h.remoteDigest(repo, "v1") != d {
				missing++
			}
		}
		pending := map[string]int{}
		for _, st := range h.svc.Status(ctx) {
			pending[st.Name] = st.Pending
		}
		if missing == 0 && pending["to-b"] == 0 && pending["to-dead"] == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 12 images missing at site-b while the other remote hangs; pending %v (want to-b 0, to-dead 12)", missing, pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusSharedByReplicas: a failure one replica records shows in every
// replica's status, with the last run, and a success on another replica
// clears it.
func TestStatusSharedByReplicas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, pushRule)
	other := h.replica()
	d := h.pushLocal("prod/app", "v1")
	h.site.refuse = func(r *http.Request) bool { return r.Method == http.MethodPut }
	if err := h.svc.Handle(t.Context(), tagEvent("prod/app", "v1", "alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.RunRule(t.Context(), "to-b"); err != nil {
		t.Fatal(err)
	}
	want := []replicate.Failure{{Repository: "prod/app", Tag: "v1", Digest: digest.Digest(d),
		Error: "DENIED: no trusted signature", Permanent: true, Attempts: 1}}
	st := other.Status(t.Context())[0]
	if diff := cmp.Diff(want, st.Failures, cmpIgnoreTimes); diff != "" {
		t.Errorf("the other replica's failures (-want +got):\n%s", diff)
	}
	if st.LastRun == nil || st.LastRun.Checked != 1 {
		t.Errorf("the other replica's last run: %+v, want the first replica's", st.LastRun)
	}
	h.site.refuse = nil
	if err := other.Handle(t.Context(), tagEvent("prod/app", "v1", "alice")); err != nil {
		t.Fatal(err)
	}
	if f := h.svc.Status(t.Context())[0].Failures; len(f) != 0 {
		t.Errorf("failures left after the other replica's success: %+v", f)
	}
}
