package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Lease timings: a collector renews its lease every leaseRenew; a lease
// not renewed for leaseTTL (its holder died) is free.
const (
	leaseTTL   = 60 * time.Second
	leaseRenew = 20 * time.Second
	// leaseSettle is how long a collector waits after writing the lease
	// before reading it back: two that wrote at once see the same winner.
	leaseSettle = 500 * time.Millisecond
)

type leaseInfo struct {
	Holder string    `json:"holder"`
	Run    string    `json:"run"`
	Until  time.Time `json:"until"`
}

// BusyError says another collector holds the lease.
type BusyError struct {
	Holder string
	Until  time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("another collection is running (held by %s, until %s unless renewed)", e.Holder, e.Until.Format(time.RFC3339))
}

type lease struct {
	c    *Collector
	info leaseInfo
}

func (c *Collector) readLease(ctx context.Context) (leaseInfo, bool, error) {
	b, err := c.driver.GetContent(ctx, leasePath)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return leaseInfo{}, false, nil
	}
	if err != nil {
		return leaseInfo{}, false, fmt.Errorf("read gc lease: %w", err)
	}
	var l leaseInfo
	if err := json.Unmarshal(b, &l); err != nil {
		return leaseInfo{}, false, nil // unreadable: free
	}
	return l, true, nil
}

// acquire takes the lease for run, or returns a *BusyError.
func (c *Collector) acquire(ctx context.Context, run string) (*lease, error) {
	cur, ok, err := c.readLease(ctx)
	if err != nil {
		return nil, err
	}
	if ok && cur.Until.After(c.now()) {
		return nil, &BusyError{Holder: cur.Holder, Until: cur.Until}
	}
	l := &lease{c: c, info: leaseInfo{Holder: c.holder, Run: run}}
	if err := l.write(ctx); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(leaseSettle):
	}
	cur, ok, err = c.readLease(ctx)
	if err != nil {
		return nil, err
	}
	if !ok || cur.Run != run {
		return nil, &BusyError{Holder: cur.Holder, Until: cur.Until}
	}
	return l, nil
}

func (l *lease) write(ctx context.Context) error {
	l.info.Until = l.c.now().Add(leaseTTL).UTC()
	b, err := json.Marshal(l.info)
	if err != nil {
		return err
	}
	if err := l.c.driver.PutContent(ctx, leasePath, b); err != nil {
		return fmt.Errorf("write gc lease: %w", err)
	}
	return nil
}

// keep renews the lease until the returned function is called; when the
// lease is lost it cancels the run through abort.
func (l *lease) keep(ctx context.Context, abort context.CancelCauseFunc) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur, ok, err := l.c.readLease(ctx)
			if err == nil && ok && cur.Run != l.info.Run {
				abort(fmt.Errorf("gc lease taken over by %s", cur.Holder))
				return
			}
			if err == nil {
				err = l.write(ctx)
			}
			if err != nil && l.c.now().After(l.info.Until.Add(-leaseRenew/2)) {
				abort(fmt.Errorf("gc lease not renewed: %w", err))
				return
			}
		}
	}()
	return func() { close(stop); <-done }
}

// release frees the lease if this collector still holds it.
func (l *lease) release(ctx context.Context) {
	cur, ok, err := l.c.readLease(ctx)
	if err == nil && ok && cur.Run == l.info.Run {
		_ = l.c.driver.Delete(ctx, leasePath)
	}
}
