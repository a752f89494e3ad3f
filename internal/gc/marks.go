package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/internal/lease"
)

// Timings of the protocol between the collector and the serving replicas.
const (
	// pollEvery is how often a replica reads the run object.
	pollEvery = time.Second
	// staleAfter: a replica that could not read the run object for this
	// long marks as though a run were in progress.
	staleAfter = 5 * time.Second
	// heartbeatEvery is how often a replica says it is alive.
	heartbeatEvery = 5 * time.Second
	// aliveWithin: a replica whose heartbeat is older is not waited for.
	aliveWithin = 20 * time.Second
	// drainAtMost bounds how long a replica waits for the requests it
	// began before it learned of a run.
	drainAtMost = 2 * time.Minute
	// tombstoneTTL: an older tombstone belongs to a collector that died
	// and blocks nothing.
	tombstoneTTL = 2 * time.Minute
	// sweepWithin: the sweeper deletes a tombstoned candidate only this
	// soon after writing its tombstone, well within tombstoneTTL.
	sweepWithin = 30 * time.Second
	// waitClearAtMost bounds how long a write waits for a tombstone on
	// what it writes to go away.
	waitClearAtMost = tombstoneTTL + 10*time.Second
	// markedMax bounds the digests a replica remembers having marked in
	// the current run.
	markedMax = 1 << 20
	// recentMax bounds the recent vouches a replica remembers.
	recentMax = 200000
)

// runInfo is the content of the run object.
type runInfo struct {
	ID      string    `json:"id"`
	Holder  string    `json:"holder"`
	Started time.Time `json:"started"`
	// Phase is "" while the collector marks and phaseSweep once it may
	// tombstone: replicas read tombstones only then.
	Phase string `json:"phase,omitempty"`
}

// phaseSweep is the run phase in which the collector tombstones.
const phaseSweep = "sweep"

// ackDir is where replicas acknowledge a phase of a run.
func ackDir(run, phase string) string {
	if phase == "" {
		phase = "mark"
	}
	return path.Join(acksRoot, run, phase)
}

// key names a run's phase: what replicas acknowledge.
func (r runInfo) key() string {
	if r.ID == "" {
		return ""
	}
	return r.ID + "/" + r.Phase
}

// Marks is a serving replica's side of the protocol: it learns of runs,
// acknowledges them, and writes markers for what it vouches for.
type Marks struct {
	driver  storagedriver.StorageDriver
	id      string
	log     *slog.Logger
	now     func() time.Time
	metrics *Metrics
	off     bool
	window  time.Duration

	mu       sync.Mutex
	recent   map[digest.Digest]time.Time // vouched for within window
	run      string                      // the run in progress as last read; "" none
	phase    string                      // its phase
	key      string                      // run/phase as last read
	polled   time.Time                   // last successful read of the run object
	gen      *generation
	marked   map[digest.Digest]struct{}
	acked    string // run/phase acknowledged last
	draining string // run/phase being acknowledged
}

// generation counts the requests begun while a given run state was known.
type generation struct {
	wg sync.WaitGroup
}

// MarksOptions configure a replica's markers.
type MarksOptions struct {
	Log     *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
	// Off turns markers off (gc.unsafeSkipMarkers): only for tests that
	// show what they prevent.
	Off bool
	// Window: the blobs of push steps this replica answered this recently
	// before it learns of a collection (and that no manifest referred to
	// since) are marked for it too, so that a client that checked or
	// uploaded a blob just before the collection began and sends its
	// manifest after is covered. The registry sets max(1m, min(gc.grace,
	// 15m)).
	Window time.Duration
}

// NewMarks returns the marker side for a replica over driver. Run must be
// running for it to learn of collections.
func NewMarks(driver storagedriver.StorageDriver, o MarksOptions) (*Marks, error) {
	if driver == nil {
		return nil, errors.New("gc marks: nil storage driver")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = newMetrics()
	}
	id, err := replicaID()
	if err != nil {
		return nil, err
	}
	m := &Marks{driver: driver, id: id, log: o.Log, now: o.Now, metrics: o.Metrics, off: o.Off, window: o.Window,
		gen: &generation{}, marked: map[digest.Digest]struct{}{}, recent: map[digest.Digest]time.Time{}}
	return m, nil
}

func replicaID() (string, error) { return lease.ReplicaID() }

// ID names this replica in heartbeats and acknowledgements.
func (m *Marks) ID() string { return m.id }

// Start announces the replica and reads the run state once, so that it
// serves knowing whether a collection runs; Run goes on from there.
func (m *Marks) Start(ctx context.Context) {
	m.heartbeat(ctx)
	m.poll(ctx)
}

// Run polls the run object and heartbeats until ctx ends.
func (m *Marks) Run(ctx context.Context) error {
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = m.driver.Delete(context.WithoutCancel(ctx), path.Join(replicasRoot, m.id))
			return nil
		case <-poll.C:
			m.poll(ctx)
		case <-beat.C:
			m.heartbeat(ctx)
		}
	}
}

func (m *Marks) heartbeat(ctx context.Context) {
	b, _ := json.Marshal(map[string]any{"id": m.id, "seen": m.now().UTC()})
	if err := m.driver.PutContent(ctx, path.Join(replicasRoot, m.id), b); err != nil && ctx.Err() == nil {
		m.log.WarnContext(ctx, "gc heartbeat not written", "err", err)
	}
}

// poll reads the run object; on a new run it starts a new generation of
// requests and acknowledges the run once the previous generation is done.
func (m *Marks) poll(ctx context.Context) {
	run, err := readRun(ctx, m.driver)
	if err != nil {
		if ctx.Err() == nil {
			m.log.WarnContext(ctx, "gc run state not read; marking as though a collection were running", "err", err)
		}
		return
	}
	m.mu.Lock()
	m.polled = m.now()
	key := run.key()
	if key == m.key {
		m.mu.Unlock()
		return
	}
	if run.ID != m.run {
		m.marked = map[digest.Digest]struct{}{}
	}
	m.key, m.run, m.phase = key, run.ID, run.Phase
	old := m.gen
	m.gen = &generation{}
	start := key != "" && m.draining != key && m.acked != key
	if start {
		m.draining = key
	}
	m.mu.Unlock()
	if start {
		go m.acknowledge(context.WithoutCancel(ctx), run, old)
	}
}

// acknowledge waits for the requests begun before the replica knew of the
// run's phase (bounded), then writes its acknowledgement; for the marking
// phase, after marking its recent push steps.
func (m *Marks) acknowledge(ctx context.Context, info runInfo, old *generation) {
	run, key := info.ID, info.key()
	done := make(chan struct{})
	go func() { old.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainAtMost):
		m.log.WarnContext(ctx, "gc: requests begun before the collection still running; acknowledging without them", "run", run)
	}
	retry := func() {
		m.mu.Lock()
		m.draining = ""
		m.key = "" // read again, and acknowledge again, at the next poll
		m.mu.Unlock()
	}
	if info.Phase == "" {
		if err := m.mark(ctx, run, m.recentVouches()); err != nil {
			m.log.WarnContext(ctx, "gc: recent vouches not marked; acknowledging later", "run", run, "err", err)
			retry()
			return
		}
	}
	if err := m.driver.PutContent(ctx, path.Join(ackDir(run, info.Phase), m.id), []byte(m.now().UTC().Format(time.RFC3339Nano))); err != nil {
		m.log.WarnContext(ctx, "gc acknowledgement not written", "run", run, "err", err)
		retry()
		return
	}
	m.mu.Lock()
	m.acked = key
	m.mu.Unlock()
}

func readRun(ctx context.Context, d storagedriver.StorageDriver) (runInfo, error) {
	b, err := d.GetContent(ctx, runPath)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return runInfo{}, nil
	}
	if err != nil {
		return runInfo{}, err
	}
	var r runInfo
	if err := json.Unmarshal(b, &r); err != nil {
		return runInfo{}, fmt.Errorf("gc run object: %w", err)
	}
	return r, nil
}

// Begin registers a request that may vouch for content; call the returned
// function when it has finished writing. A replica acknowledges a run only
// after the requests begun before it knew of the run have finished.
func (m *Marks) Begin() func() {
	if m == nil {
		return func() {}
	}
	m.mu.Lock()
	g := m.gen
	g.wg.Add(1)
	m.mu.Unlock()
	return g.wg.Done
}

// Vouch is what one request vouches for.
type Vouch struct {
	// Repository is where the manifests are.
	Repository string
	// Manifests are manifests of the repository the request reads or
	// refers to.
	Manifests []digest.Digest
	// Blobs are blobs (configs, layers) the request reads or refers to.
	Blobs []digest.Digest
}

// TombstonedError says that content is being deleted: the client must
// upload it again.
type TombstonedError struct {
	Digest   digest.Digest
	Manifest bool
}

func (e *TombstonedError) Error() string {
	return fmt.Sprintf("%s is being deleted by garbage collection", e.Digest)
}

// active returns whether markers are needed, the run they are for ("": a
// run is assumed because the run object could not be read lately), and
// whether tombstones may exist (the run sweeps, or the state is unknown).
func (m *Marks) active() (on bool, run string, sweeping bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.off {
		return false, "", false
	}
	if m.run != "" {
		return true, m.run, m.phase == phaseSweep
	}
	stale := m.now().Sub(m.polled) > staleAfter
	return stale, "", stale
}

// Vouch marks what v names while a collection runs, then waits until none
// of it is tombstoned (the sweeper deletes it or spares it within
// seconds): the caller then finds it as it is. A *TombstonedError names
// content still tombstoned after waitClearAtMost. Outside collections it
// does nothing; call Remember once the request succeeded.
func (m *Marks) Vouch(ctx context.Context, v Vouch) error {
	if m == nil || m.off {
		return nil
	}
	all := v.digests()
	on, run, sweeping := m.active()
	if !on {
		return nil
	}
	if err := m.mark(ctx, run, all); err != nil {
		return err
	}
	if !sweeping {
		return nil // no tombstone before every replica knows the sweep began
	}
	deadline := m.now().Add(waitClearAtMost)
	for {
		err := m.checkTombstones(ctx, v)
		var te *TombstonedError
		if err == nil || !errors.As(err, &te) || m.now().After(deadline) {
			if te != nil {
				m.metrics.refusals.Inc()
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (m *Marks) mark(ctx context.Context, run string, ds []digest.Digest) error {
	var todo []digest.Digest
	m.mu.Lock()
	for _, d := range ds {
		if _, ok := m.marked[d]; run != "" && run == m.run && ok {
			continue
		}
		todo = append(todo, d)
	}
	m.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	stamp := []byte(m.id)
	for _, d := range todo {
		g.Go(func() error {
			if err := m.driver.PutContent(gctx, markPath(d), stamp); err != nil {
				return fmt.Errorf("gc marker for %s: %w", d, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	m.metrics.markers.Add(float64(len(todo)))
	m.mu.Lock()
	if run != "" && run == m.run && len(m.marked)+len(todo) <= markedMax {
		for _, d := range todo {
			m.marked[d] = struct{}{}
		}
	}
	m.mu.Unlock()
	return nil
}

func (m *Marks) checkTombstones(ctx context.Context, v Vouch) error {
	type check struct {
		path     string
		d        digest.Digest
		manifest bool
	}
	var checks []check
	for _, d := range v.Manifests {
		checks = append(checks, check{manifestTombstone(v.Repository, d), d, true}, check{blobTombstone(d), d, true})
	}
	for _, d := range v.Blobs {
		checks = append(checks, check{blobTombstone(d), d, false})
	}
	found := make([]bool, len(checks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, c := range checks {
		g.Go(func() error {
			fi, err := m.driver.Stat(gctx, c.path)
			var nf storagedriver.PathNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("gc tombstone of %s: %w", c.d, err)
			}
			found[i] = m.now().Sub(fi.ModTime()) < tombstoneTTL
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, c := range checks {
		if found[i] {
			return &TombstonedError{Digest: c.d, Manifest: c.manifest}
		}
	}
	return nil
}

// Active reports whether requests must vouch now: a collection runs, or
// the replica could not tell lately.
func (m *Marks) Active() bool {
	if m == nil {
		return false
	}
	on, _, _ := m.active()
	return on
}

func (v Vouch) digests() []digest.Digest {
	all := make([]digest.Digest, 0, len(v.Manifests)+len(v.Blobs))
	all = append(all, v.Manifests...)
	return append(all, v.Blobs...)
}

// Remember notes the blobs of a push step that succeeded (a blob HEAD
// that found it, a finished upload, a mount), so that a collection
// beginning within Window marks them: the push's manifest may come after
// the collection decided. Settle forgets them once a manifest refers to
// them.
func (m *Marks) Remember(v Vouch) {
	if m == nil || m.off || m.window <= 0 {
		return
	}
	ds := v.Blobs
	if len(ds) == 0 {
		return
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.recent)+len(ds) > recentMax {
		for d, t := range m.recent {
			if now.Sub(t) > m.window {
				delete(m.recent, d)
			}
		}
		if len(m.recent)+len(ds) > recentMax {
			clear(m.recent) // beyond the bound: the grace period alone protects
		}
	}
	for _, d := range ds {
		m.recent[d] = now
	}
}

// Settle forgets the blobs a stored manifest refers to: the push that
// checked them is done, and from now on the manifest keeps them.
func (m *Marks) Settle(v Vouch) {
	if m == nil || m.off || len(v.Blobs) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range v.Blobs {
		delete(m.recent, d)
	}
}

// recentVouches returns what was vouched for within the window.
func (m *Marks) recentVouches() []digest.Digest {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []digest.Digest
	for d, t := range m.recent {
		if now.Sub(t) <= m.window {
			out = append(out, d)
		} else {
			delete(m.recent, d)
		}
	}
	return out
}
