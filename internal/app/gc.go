package app

import (
	"context"
	"fmt"
	"log/slog"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/gc"
	"github.com/portcullis/portcullis/internal/scanner"
)

// newCollector builds the garbage collector the configuration describes.
func newCollector(cfg *config.Config, driver storagedriver.StorageDriver, log *slog.Logger, metrics *gc.Metrics) (*gc.Collector, error) {
	o := gc.Options{
		Grace:          cfg.GC.Grace.D(),
		DeleteUntagged: *cfg.GC.DeleteUntagged,
		Workers:        cfg.GC.Workers,
		Retention:      cfg.Retention,
		Reserved:       []string{scanner.DBRepository},
		Log:            log,
		Metrics:        metrics,
	}
	if len(cfg.Auth.TagRules) > 0 {
		// Immutable tag rules bind retention whether or not auth is on.
		p, err := auth.NewPolicy(cfg.Auth)
		if err != nil {
			return nil, fmt.Errorf("auth.tagRules: %w", err)
		}
		o.Protected = p.Immutable
	}
	return gc.New(driver, o)
}

// buildGC builds this replica's collector and markers.
func (a *App) buildGC() error {
	m, err := gc.NewMetrics(a.metrics)
	if err != nil {
		return err
	}
	if a.marks, err = gc.NewMarks(a.driver, gc.MarksOptions{Log: a.log, Metrics: m, Off: a.cfg.GC.UnsafeSkipMarkers}); err != nil {
		return err
	}
	if a.pulls, err = gc.NewPulls(a.driver, nil); err != nil {
		return err
	}
	a.collector, err = newCollector(a.cfg, a.driver, a.log, m)
	return err
}

// runGC runs the markers and the background collector until ctx ends.
func (a *App) runGC(ctx context.Context) {
	if a.marks == nil {
		return
	}
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
	c, err := newCollector(cfg, driver, log, m)
	if err != nil {
		return nil, err
	}
	return c.Collect(ctx, dryRun)
}
