package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/front"
	"github.com/portcullis/portcullis/internal/gc"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/scanner"
)

// newCollector builds the garbage collector the configuration describes;
// deleted, when set, is told of each tag and manifest it deletes, and no
// retention rule deletes the tags protected reports (immutable tags).
func newCollector(cfg *config.Config, driver storagedriver.StorageDriver, log *slog.Logger, metrics *gc.Metrics,
	deleted func(context.Context, gc.Deleted), protected func(repo, tag string) bool) (*gc.Collector, error) {
	return gc.New(driver, gc.Options{
		Deleted:        deleted,
		Protected:      protected,
		Grace:          cfg.GC.Grace.D(),
		DeleteUntagged: *cfg.GC.DeleteUntagged,
		Workers:        cfg.GC.Workers,
		Retention:      cfg.Retention,
		Reserved:       []string{scanner.DBRepository},
		Log:            log,
		Metrics:        metrics,
	})
}

// immutableTags returns the immutable tag rules of cfg, nil without tag
// rules.
func immutableTags(cfg *config.Config) (func(repo, tag string) bool, error) {
	if len(cfg.Auth.TagRules) == 0 {
		return nil, nil
	}
	p, err := auth.NewPolicy(cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("auth.tagRules: %w", err)
	}
	return p.Immutable, nil
}

// buildMarks builds this replica's markers and pull times.
func (a *App) buildMarks() error {
	var err error
	if a.gcMetrics, err = gc.NewMetrics(a.metrics); err != nil {
		return err
	}
	window := max(time.Minute, min(a.cfg.GC.Grace.D(), 15*time.Minute))
	if a.marks, err = gc.NewMarks(a.driver, gc.MarksOptions{Log: a.log, Metrics: a.gcMetrics, Off: a.cfg.GC.UnsafeSkipMarkers, Window: window}); err != nil {
		return err
	}
	a.pulls, err = gc.NewPulls(a.driver, nil, pullEvery(a.cfg))
	return err
}

// buildCollector builds this replica's background collector; the tags and
// manifests it deletes are recorded in events, as deletions by clients are.
func (a *App) buildCollector(events front.Events) error {
	deleted := func(ctx context.Context, d gc.Deleted) {
		e := outbox.Event{Kind: outbox.KindDelete, Repository: d.Repository, Tag: d.Tag, Time: time.Now()}
		if d.Kind == "manifest" {
			e.Digest = d.Digest
		}
		if _, err := events.Append(ctx, e); err != nil {
			a.log.WarnContext(ctx, "deletion by garbage collection not recorded", "repo", d.Repository, "err", err)
		}
	}
	// The tag rules are the current generation's: a reload that makes a
	// tag immutable protects it from the next collection too.
	protected := func(repo, tag string) bool {
		g := a.gen.Load()
		return g.auth != nil && g.auth.Policy.Immutable(repo, tag)
	}
	var err error
	a.collector, err = newCollector(a.cfg, a.driver, a.log, a.gcMetrics, deleted, protected)
	return err
}

// runGC runs the markers and the background collector until ctx ends.
func (a *App) runGC(ctx context.Context) {
	if a.marks == nil {
		return
	}
	a.marks.Start(ctx)
	go func() {
		if err := a.marks.Run(ctx); err != nil {
			a.log.ErrorContext(ctx, "gc markers stopped", "err", err)
		}
	}()
	go func() {
		if err := a.collector.Loop(ctx, a.cfg.GC.Interval.D()); err != nil {
			a.log.ErrorContext(ctx, "garbage collector stopped", "err", err)
		}
	}()
}

// Collect runs one garbage collection over the configured storage, as
// `registry gc` does, beside serving replicas.
func Collect(ctx context.Context, cfg *config.Config, log *slog.Logger, dryRun bool) (*gc.Report, error) {
	if err := registerWithDistribution(); err != nil {
		return nil, err
	}
	driver, err := newDriver(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m, err := gc.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	protected, err := immutableTags(cfg)
	if err != nil {
		return nil, err
	}
	c, err := newCollector(cfg, driver, log, m, nil, protected)
	if err != nil {
		return nil, err
	}
	return c.Collect(ctx, dryRun)
}

// pullEvery is how often a manifest's pull time is written: an hour, or a
// quarter of the shortest pulledWithin or cache maxAge when that is
// shorter, so that what is pulled all along never looks idle.
func pullEvery(cfg *config.Config) time.Duration {
	every := gc.PullEvery
	for _, p := range cfg.Retention.Policies {
		for _, k := range p.Keep {
			if k.PulledWithin > 0 {
				every = min(every, k.PulledWithin.D()/4)
			}
		}
	}
	for _, c := range cfg.Cache {
		if c.MaxAge > 0 {
			every = min(every, c.MaxAge.D()/4)
		}
	}
	return every
}
