package gc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/lease"
)

// abandonedAfter is the least idle time before an upload session counts as
// abandoned, whatever the grace period: a session in use is written to at
// least every 15 minutes, and the S3 driver stores no sign of activity for
// a PATCH within a minute of the session's start (whose own time shows it).
const abandonedAfter = 16 * time.Minute

// keptReports is how many reports the backend keeps.
const keptReports = 20

// Options configure a collector.
type Options struct {
	// Grace: nothing written more recently is deleted.
	Grace time.Duration
	// DeleteUntagged deletes manifests no tag reaches.
	DeleteUntagged bool
	// Workers is how many storage operations run at once; default 16.
	Workers int
	// Retention deletes tags by policy.
	Retention config.Retention
	// Protected reports tags no retention rule may delete (immutable tags).
	Protected func(repo, tag string) bool
	// Reserved are repositories whose content is never collected (the
	// vulnerability database).
	Reserved []string
	// Holder names the collector in the lease and reports; default the
	// host name.
	Holder string
	// Deleted, when set, is told of each tag and manifest deleted, after
	// the deletion (the registry records them as events).
	Deleted func(ctx context.Context, d Deleted)
	Log     *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// Collector collects garbage in one storage backend.
type Collector struct {
	driver    storagedriver.StorageDriver
	grace     time.Duration
	untagged  bool
	workers   int
	retention retention
	protected func(repo, tag string) bool
	reserved  []string
	holder    string
	lease     *lease.Lease
	deleted   func(ctx context.Context, d Deleted)
	log       *slog.Logger
	metrics   *Metrics
	now       func() time.Time
	// afterPlan, when set, runs between marking and sweeping (tests).
	afterPlan func(ctx context.Context)
}

// New returns a collector over driver.
func New(driver storagedriver.StorageDriver, o Options) (*Collector, error) {
	if driver == nil {
		return nil, errors.New("gc: nil storage driver")
	}
	if o.Grace < 0 {
		return nil, errors.New("gc: negative grace period")
	}
	ret, err := compileRetention(o.Retention)
	if err != nil {
		return nil, err
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Protected == nil {
		o.Protected = func(string, string) bool { return false }
	}
	if o.Holder == "" {
		id, err := replicaID()
		if err != nil {
			return nil, err
		}
		o.Holder = id
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = newMetrics()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l, err := lease.New(driver, lease.Options{Path: leasePath, Holder: o.Holder, Now: o.Now})
	if err != nil {
		return nil, err
	}
	return &Collector{driver: driver, grace: o.Grace, untagged: o.DeleteUntagged, workers: o.Workers, retention: ret,
		protected: o.Protected, reserved: o.Reserved, holder: o.Holder, lease: l, deleted: o.Deleted, log: o.Log, metrics: o.Metrics, now: o.Now}, nil
}

// Collect runs one collection; a dry run decides the same way and deletes
// nothing. It returns a *BusyError when another collector holds the lease.
func (c *Collector) Collect(ctx context.Context, dryRun bool) (*Report, error) {
	start := c.now()
	rep := &Report{ID: runID(start), DryRun: dryRun, Holder: c.holder, Started: start.UTC()}
	l, err := c.acquire(ctx, rep.ID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopRenew := l.Keep(ctx, cancel)
	defer func() {
		stopRenew()
		l.Release(context.WithoutCancel(ctx))
	}()
	err = c.collect(ctx, rep)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	rep.Finished = c.now().UTC()
	rep.DurationSeconds = rep.Finished.Sub(start).Seconds()
	result := "ok"
	if err != nil {
		rep.Error = err.Error()
		result = "error"
	} else {
		c.metrics.lastSuccess.Set(float64(rep.Finished.Unix()))
	}
	c.metrics.runs.WithLabelValues(result).Inc()
	c.metrics.duration.Set(rep.DurationSeconds)
	if serr := c.storeReport(context.WithoutCancel(ctx), rep); serr != nil {
		c.log.WarnContext(ctx, "gc report not stored", "err", serr)
	}
	c.log.InfoContext(ctx, "garbage collection", "run", rep.ID, "dry_run", dryRun, "seconds", rep.DurationSeconds,
		"tags_deleted", rep.Tags.Deleted, "manifests_deleted", rep.Manifests.Deleted, "blobs_deleted", rep.Blobs.Deleted,
		"spared", rep.Blobs.Spared+rep.Manifests.Spared, "bytes_reclaimed", rep.BytesReclaimed, "err", err)
	return rep, err
}

func runID(t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return t.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b)
}

func (c *Collector) collect(ctx context.Context, rep *Report) error {
	if !rep.DryRun {
		if err := c.announce(ctx, rep.ID); err != nil {
			return err
		}
		defer c.finish(context.WithoutCancel(ctx), rep.ID)
	}
	markStart := c.now()
	inv, err := c.list(ctx, c.retention.needsPulls())
	if err != nil {
		return err
	}
	p, err := c.plan(ctx, inv)
	if err != nil {
		return err
	}
	if c.afterPlan != nil {
		c.afterPlan(ctx)
	}
	rep.Repositories = len(inv.repos)
	rep.MarkSeconds = c.now().Sub(markStart).Seconds()
	sweepStart := c.now()
	defer func() { rep.SweepSeconds = c.now().Sub(sweepStart).Seconds() }()
	if rep.DryRun {
		for _, d := range p.all() {
			rep.add(d)
		}
		p.count(rep)
		return nil
	}
	if err := c.sweepPhase(ctx, rep.ID); err != nil {
		return err
	}
	return c.sweep(ctx, p, rep)
}

// announce clears what an earlier run left, publishes the run and waits
// until every live replica has acknowledged it.
func (c *Collector) announce(ctx context.Context, id string) error {
	for _, p := range []string{marksRoot, tombstonesRoot, acksRoot} {
		if err := c.deleteTree(ctx, p); err != nil {
			return err
		}
	}
	b, err := json.Marshal(runInfo{ID: id, Holder: c.holder, Started: c.now().UTC()})
	if err != nil {
		return err
	}
	if err := c.driver.PutContent(ctx, runPath, b); err != nil {
		return fmt.Errorf("announce collection: %w", err)
	}
	return c.awaitAcks(ctx, id, "")
}

// sweepPhase tells the replicas the sweep begins (they read tombstones
// from then on) and waits until every live replica has acknowledged it.
func (c *Collector) sweepPhase(ctx context.Context, id string) error {
	b, err := json.Marshal(runInfo{ID: id, Holder: c.holder, Started: c.now().UTC(), Phase: phaseSweep})
	if err != nil {
		return err
	}
	if err := c.driver.PutContent(ctx, runPath, b); err != nil {
		return fmt.Errorf("announce the sweep: %w", err)
	}
	return c.awaitAcks(ctx, id, phaseSweep)
}

// awaitAcks waits until every live replica acknowledged phase of run id.
func (c *Collector) awaitAcks(ctx context.Context, id, phase string) error {
	deadline := c.now().Add(drainAtMost + 30*time.Second)
	for {
		missing, err := c.unacknowledged(ctx, id, phase)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			return nil
		}
		if c.now().After(deadline) {
			return fmt.Errorf("replicas %s did not acknowledge the collection; nothing was deleted", strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// unacknowledged returns the live replicas that have not acknowledged run
// id; it forgets replicas silent for an hour.
func (c *Collector) unacknowledged(ctx context.Context, id, phase string) ([]string, error) {
	acked := map[string]bool{}
	if err := walk(ctx, c.driver, ackDir(id, phase), func(fi storagedriver.FileInfo) {
		acked[path.Base(fi.Path())] = true
	}); err != nil {
		return nil, err
	}
	var missing, gone []string
	if err := walk(ctx, c.driver, replicasRoot, func(fi storagedriver.FileInfo) {
		name := path.Base(fi.Path())
		age := c.now().Sub(fi.ModTime())
		switch {
		case age > time.Hour:
			gone = append(gone, fi.Path())
		case age <= aliveWithin && !acked[name]:
			missing = append(missing, name)
		}
	}); err != nil {
		return nil, err
	}
	for _, p := range gone {
		_ = c.driver.Delete(ctx, p)
	}
	slices.Sort(missing)
	return missing, nil
}

// finish ends the run: replicas stop marking, and the markers, tombstones
// and acknowledgements go.
func (c *Collector) finish(ctx context.Context, id string) {
	if err := c.deleteTree(ctx, runPath); err != nil {
		c.log.WarnContext(ctx, "gc run object not removed; replicas go on marking until the next run", "run", id, "err", err)
	}
	for _, p := range []string{marksRoot, tombstonesRoot, acksRoot} {
		if err := c.deleteTree(ctx, p); err != nil {
			c.log.WarnContext(ctx, "gc state not cleared", "path", p, "err", err)
		}
	}
}

func (c *Collector) deleteTree(ctx context.Context, p string) error {
	err := c.driver.Delete(ctx, p)
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("delete %s: %w", p, err)
	}
	return nil
}

func (c *Collector) storeReport(ctx context.Context, rep *Report) error {
	b, err := json.Marshal(rep.Summary())
	if err != nil {
		return err
	}
	if err := c.driver.PutContent(ctx, path.Join(reportsRoot, rep.ID+".json"), b); err != nil {
		return err
	}
	names, err := c.reportNames(ctx)
	if err != nil {
		return err
	}
	for len(names) > keptReports {
		_ = c.driver.Delete(ctx, names[0])
		names = names[1:]
	}
	return nil
}

// reportNames returns the stored reports' paths, oldest first.
func (c *Collector) reportNames(ctx context.Context) ([]string, error) {
	var names []string
	if err := walk(ctx, c.driver, reportsRoot, func(fi storagedriver.FileInfo) {
		if strings.HasSuffix(fi.Path(), ".json") {
			names = append(names, fi.Path())
		}
	}); err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// Runs returns the stored reports of the last collections, newest first,
// without their lists of deletions.
func (c *Collector) Runs(ctx context.Context) ([]Report, error) {
	names, err := c.reportNames(ctx)
	if err != nil {
		return nil, err
	}
	out := []Report{}
	for i := len(names) - 1; i >= 0; i-- {
		b, err := c.driver.GetContent(ctx, names[i])
		if err != nil {
			continue // pruned meanwhile
		}
		var r Report
		if json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// Loop runs a collection every interval until ctx ends; a replica that
// finds the lease held leaves the run to its holder.
func (c *Collector) Loop(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := c.Collect(ctx, false)
		var busy *BusyError
		switch {
		case errors.As(err, &busy):
			c.log.DebugContext(ctx, "garbage collection left to another replica", "holder", busy.Holder)
		case err != nil && ctx.Err() == nil:
			c.log.ErrorContext(ctx, "garbage collection failed", "err", err)
		}
	}
}

// stored returns d's stored digest in r (itself unless an alias).
func stored(r *repoState, d digest.Digest) digest.Digest {
	if t, ok := r.aliases[d]; ok {
		return t
	}
	return d
}
