// Package lease gives scheduled work to one replica at a time: a small
// object in the storage backend names its holder and an expiry, which the
// holder renews while it works. A holder that dies stops renewing, and
// its lease is free once it expires.
//
// Caveats:
//   - Taking a lease writes the object, waits Settle and reads it back:
//     of several replicas that wrote at once, each sees the same winner
//     (the backend's last write). This relies on the backend's
//     read-after-write consistency, which S3 and MinIO give.
//   - A holder that cannot renew for about TTL loses the lease: Keep
//     cancels its work.
//
// The package must not import internal/app or any HTTP wiring.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Options configure a Lease. Zero values mean the defaults.
type Options struct {
	// Path is the lease object's path in the storage backend. Required.
	Path string
	// Holder names this replica in the lease; default the host name with
	// a random suffix.
	Holder string
	// TTL is how long a lease lasts unless renewed (default 60s); Renew
	// how often its holder renews it (default TTL/3); Settle how long
	// Acquire waits before reading the lease back (default 500ms).
	TTL, Renew, Settle time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Lease is one lease object in a storage backend.
type Lease struct {
	driver storagedriver.StorageDriver
	o      Options
}

// Info is what a lease object says.
type Info struct {
	Holder string    `json:"holder"`
	Run    string    `json:"run"`
	Until  time.Time `json:"until"`
}

// BusyError is returned by Acquire when another holder has the lease.
type BusyError struct {
	Holder string
	Until  time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("held by %s until %s unless renewed", e.Holder, e.Until.Format(time.RFC3339))
}

// New returns the lease at o.Path in driver. It fails without a driver or
// a path, or when no holder name can be made.
func New(driver storagedriver.StorageDriver, o Options) (*Lease, error) {
	if driver == nil || o.Path == "" {
		return nil, errors.New("lease: a storage driver and a path are required")
	}
	if o.Holder == "" {
		id, err := ReplicaID()
		if err != nil {
			return nil, err
		}
		o.Holder = id
	}
	if o.TTL <= 0 {
		o.TTL = 60 * time.Second
	}
	if o.Renew <= 0 {
		o.Renew = o.TTL / 3
	}
	if o.Settle <= 0 {
		o.Settle = 500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Lease{driver: driver, o: o}, nil
}

// ReplicaID returns a name for this replica: the host name and a random
// suffix.
func ReplicaID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "replica"
	}
	return path.Base(host) + "-" + hex.EncodeToString(b), nil
}

// Holder returns the name this replica holds leases under.
func (l *Lease) Holder() string { return l.o.Holder }

// Read returns the lease object; ok is false when there is none (or it
// cannot be decoded: it is free). It returns the backend's error.
func (l *Lease) Read(ctx context.Context) (info Info, ok bool, err error) {
	b, err := l.driver.GetContent(ctx, l.o.Path)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return Info{}, false, nil
	}
	if err != nil {
		return Info{}, false, fmt.Errorf("read lease %s: %w", l.o.Path, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, false, nil
	}
	return info, true, nil
}

// Held is a lease this replica holds for one run.
type Held struct {
	l    *Lease
	info Info
}

// Acquire takes the lease for run (a name unique to this attempt). It
// returns a *BusyError when another holder has it, ctx's error, or the
// backend's.
func (l *Lease) Acquire(ctx context.Context, run string) (*Held, error) {
	cur, ok, err := l.Read(ctx)
	if err != nil {
		return nil, err
	}
	if ok && cur.Until.After(l.o.Now()) {
		return nil, &BusyError{Holder: cur.Holder, Until: cur.Until}
	}
	h := &Held{l: l, info: Info{Holder: l.o.Holder, Run: run}}
	if err := h.write(ctx); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(l.o.Settle):
	}
	cur, ok, err = l.Read(ctx)
	if err != nil {
		return nil, err
	}
	if !ok || cur.Run != run {
		return nil, &BusyError{Holder: cur.Holder, Until: cur.Until}
	}
	return h, nil
}

func (h *Held) write(ctx context.Context) error {
	h.info.Until = h.l.o.Now().Add(h.l.o.TTL).UTC()
	b, err := json.Marshal(h.info)
	if err != nil {
		return err
	}
	if err := h.l.driver.PutContent(ctx, h.l.o.Path, b); err != nil {
		return fmt.Errorf("write lease %s: %w", h.l.o.Path, err)
	}
	return nil
}

// Keep renews the lease until the returned function is called; when the
// lease is lost (another holder took it, or it could not be renewed in
// time) it cancels the work through abort.
func (h *Held) Keep(ctx context.Context, abort context.CancelCauseFunc) (stop func()) {
	stopc := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(h.l.o.Renew)
		defer t.Stop()
		for {
			select {
			case <-stopc:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur, ok, err := h.l.Read(ctx)
			if err == nil && ok && cur.Run != h.info.Run {
				abort(fmt.Errorf("lease %s taken over by %s", h.l.o.Path, cur.Holder))
				return
			}
			if err == nil {
				err = h.write(ctx)
			}
			if err != nil && h.l.o.Now().After(h.info.Until.Add(-h.l.o.Renew/2)) {
				abort(fmt.Errorf("lease %s not renewed: %w", h.l.o.Path, err))
				return
			}
		}
	}()
	return func() { close(stopc); <-done }
}

// Release frees the lease if this run still holds it.
func (h *Held) Release(ctx context.Context) {
	cur, ok, err := h.l.Read(ctx)
	if err == nil && ok && cur.Run == h.info.Run {
		_ = h.l.driver.Delete(ctx, h.l.o.Path)
	}
}
