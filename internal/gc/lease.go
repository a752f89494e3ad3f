package gc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis/portcullis/internal/lease"
)

// BusyError says another collector holds the lease.
type BusyError struct {
	Holder string
	Until  time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("another collection is running (held by %s, until %s unless renewed)", e.Holder, e.Until.Format(time.RFC3339))
}

// acquire takes the lease for run, or returns a *BusyError.
func (c *Collector) acquire(ctx context.Context, run string) (*lease.Held, error) {
	h, err := c.lease.Acquire(ctx, run)
	var busy *lease.BusyError
	if errors.As(err, &busy) {
		return nil, &BusyError{Holder: busy.Holder, Until: busy.Until}
	}
	if err != nil {
		return nil, fmt.Errorf("gc lease: %w", err)
	}
	return h, nil
}
