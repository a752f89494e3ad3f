package app

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/internal/gc"
)

// storedEvery is how often a replica counts what the storage holds: a
// listing of the whole storage, never made per scrape.
const storedEvery = 15 * time.Minute

// storedGauges are what the storage holds, as last counted.
type storedGauges struct {
	repositories, tags, manifests, blobs, bytes, counted prometheus.Gauge
}

func newStoredGauges(reg prometheus.Registerer) (*storedGauges, error) {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "portcullis_stored_" + name, Help: help})
	}
	s := &storedGauges{
		repositories: g("repositories", "Repositories with a manifest or a tag, as last counted."),
		tags:         g("tags", "Tags of every repository, as last counted."),
		manifests:    g("manifests", "Manifests of every repository (images, indexes, signatures, SBOMs, scan reports), each repository's once, as last counted."),
		blobs:        g("blobs", "Blobs stored, each once, as last counted."),
		bytes:        g("bytes", "Bytes of every blob, each stored once, as last counted."),
		counted:      g("counted_timestamp_seconds", "When what the storage holds was last counted (Unix time); 0 before the first count."),
	}
	for _, c := range []prometheus.Collector{s.repositories, s.tags, s.manifests, s.blobs, s.bytes, s.counted} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register stored metrics: %w", err)
		}
	}
	return s, nil
}

// runStoredCount counts what the storage holds at start-up and every
// storedEvery until ctx is done.
func (a *App) runStoredCount(ctx context.Context) {
	if a.stored == nil {
		return
	}
	go func() {
		t := time.NewTicker(storedEvery)
		defer t.Stop()
		for {
			s, err := gc.CountStored(ctx, a.driver)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				a.log.WarnContext(ctx, "count what the storage holds", "err", err)
			default:
				a.stored.repositories.Set(float64(s.Repositories))
				a.stored.tags.Set(float64(s.Tags))
				a.stored.manifests.Set(float64(s.Manifests))
				a.stored.blobs.Set(float64(s.Blobs))
				a.stored.bytes.Set(float64(s.Bytes))
				a.stored.counted.SetToCurrentTime()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}
