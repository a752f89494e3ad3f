package app

import (
	"context"

	"github.com/portcullis/portcullis/internal/gc"
)

// CollectNow runs one collection with the registry's background collector,
// as its schedule would.
func CollectNow(ctx context.Context, a *App) (*gc.Report, error) {
	return a.collector.Collect(ctx, false)
}

// WatchOnce runs one check of the watch, as reload.interval would.
func WatchOnce(ctx context.Context, a *App) { a.checkFiles(ctx) }
