package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotReady is what a Handler returns (wrapped) when its consumer cannot
// process any entry yet, such as a scanner without a vulnerability
// database: the entry stays, and the Dispatcher pauses until Wake.
var ErrNotReady = errors.New("consumer not ready")

// Handler does the work for one entry and returns when it is finished. It
// returns nil when the entry is done (also when the work failed for good
// and the failure is recorded): the entry is deleted. An error wrapping
// ErrNotReady pauses the dispatcher; any other error keeps the entry, to be
// retried with backoff. A repeated event must be a no-op.
type Handler func(ctx context.Context, e Entry) error

// DispatcherOptions tune a Dispatcher. The zero value means the defaults.
type DispatcherOptions struct {
	// Concurrency is how many entries are handled at once; default 1.
	Concurrency int
	// MinBackoff is the first retry delay of an entry; default 1s. It
	// doubles with each failure up to MaxBackoff (default 5m), which is
	// also how long the dispatcher waits for Wake after ErrNotReady.
	MinBackoff, MaxBackoff time.Duration
	// Log receives retries and failures; default none.
	Log *slog.Logger
	// Retries, when set, counts entries kept for a retry.
	Retries prometheus.Counter
	// Now is the clock of backoffs and pauses; default time.Now.
	Now func() time.Time
}

const (
	// readBatch is how many entries are read at once.
	readBatch = 64
	// maxRetrying bounds the entries whose backoff is remembered; beyond
	// it the entry due last is forgotten, and is simply retried sooner.
	maxRetrying = 1024
	// breakerFailures is how many failures in a row, with no success in
	// between, pause all dispatching (storage down) with backoff.
	breakerFailures = 8
)

// Dispatcher hands a consumer the entries of an outbox in order, a bounded
// number at a time, and deletes each once it is done.
type Dispatcher struct {
	box  *Outbox
	h    Handler
	opts DispatcherOptions
	wake chan struct{}
	// wakes counts Wake calls, so that an ErrNotReady from a handler
	// that started before the last Wake does not pause the dispatcher.
	wakes atomic.Uint64
}

// NewDispatcher returns a dispatcher of box's entries to h; Run starts it.
// It returns an error for a missing outbox or handler or negative options.
func NewDispatcher(box *Outbox, h Handler, opts DispatcherOptions) (*Dispatcher, error) {
	if box == nil || h == nil {
		return nil, errors.New("outbox dispatcher: an outbox and a handler are required")
	}
	if opts.Concurrency < 0 || opts.MinBackoff < 0 || opts.MaxBackoff < 0 {
		return nil, errors.New("outbox dispatcher: concurrency and backoffs must not be negative")
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Dispatcher{box: box, h: h, opts: opts, wake: make(chan struct{}, 1)}, nil
}

// Wake ends a pause (after ErrNotReady or repeated failures) and the
// backoff of the entries kept for a retry, and makes the dispatcher start
// again from the oldest entry. It never blocks.
func (d *Dispatcher) Wake() {
	d.wakes.Add(1)
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

type result struct {
	e     Entry
	err   error
	wakes uint64 // d.wakes when the handler started
}

type retryState struct {
	attempts int
	next     time.Time
}

// runState is the dispatcher's memory: bounded by Concurrency and
// maxRetrying, whatever the length of the outbox.
type runState struct {
	cursor   uint64 // last entry looked at in this pass
	atEnd    bool   // the pass reached the newest entry
	inflight map[uint64]bool
	retry    map[uint64]retryState
	failures int       // transient failures in a row
	paused   time.Time // no dispatching before this
}

// Run dispatches entries until ctx is done, then waits for the handlers
// still running (their ctx is cancelled) and returns nil. Entries not
// finished stay in the outbox. Call it once: the outbox has one consumer.
func (d *Dispatcher) Run(ctx context.Context) error {
	st := newRunState()
	results := make(chan result, d.opts.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		if ctx.Err() != nil {
			return nil
		}
		d.dispatch(ctx, st, results, &wg)

		var appended <-chan struct{}
		if st.atEnd {
			appended = d.box.Appended()
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if at := st.wakeAt(d.opts.Now()); !at.IsZero() {
			timer = time.NewTimer(at.Sub(d.opts.Now()))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case r := <-results:
			d.finish(ctx, st, r)
		case <-d.wake:
			st.woken()
		case <-appended:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if st.atEnd {
			st.atEnd, st.cursor = false, 0
		}
	}
}

func newRunState() *runState {
	return &runState{inflight: map[uint64]bool{}, retry: map[uint64]retryState{}}
}

// woken ends a pause and the retries' backoff, and starts a pass from the
// oldest entry. The retries' attempts are forgotten too: an entry that
// fails again starts over at MinBackoff.
func (st *runState) woken() {
	st.paused, st.failures, st.cursor = time.Time{}, 0, 0
	clear(st.retry)
}

// dispatch starts handlers for the due entries after the cursor until the
// pass ends, all slots are busy, or dispatching is paused.
func (d *Dispatcher) dispatch(ctx context.Context, st *runState, results chan<- result, wg *sync.WaitGroup) {
	for {
		now := d.opts.Now()
		if now.Before(st.paused) || len(st.inflight) >= d.opts.Concurrency {
			return
		}
		entries, err := d.box.Read(ctx, st.cursor, readBatch)
		if err != nil {
			if ctx.Err() == nil {
				d.opts.Log.ErrorContext(ctx, "read outbox", "err", err)
				st.failures++
				st.paused = now.Add(d.backoff(st.failures))
			}
			return
		}
		for _, e := range entries {
			if len(st.inflight) >= d.opts.Concurrency {
				return
			}
			st.cursor = e.Seq
			if st.inflight[e.Seq] {
				continue
			}
			if r, ok := st.retry[e.Seq]; ok && now.Before(r.next) {
				continue
			}
			st.inflight[e.Seq] = true
			wakes := d.wakes.Load()
			wg.Go(func() { results <- result{e: e, err: d.call(ctx, e), wakes: wakes} })
		}
		if len(entries) < readBatch {
			st.atEnd = true
			return
		}
	}
}

// call runs the handler; a panic is a failure to retry.
func (d *Dispatcher) call(ctx context.Context, e Entry) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("outbox handler panicked: %v", v)
		}
	}()
	return d.h(ctx, e)
}

// finish deletes a finished entry, or schedules its retry.
func (d *Dispatcher) finish(ctx context.Context, st *runState, r result) {
	delete(st.inflight, r.e.Seq)
	if ctx.Err() != nil {
		return // shutting down: the entry stays for the next run
	}
	now := d.opts.Now()
	ev := r.e.Event
	switch {
	case r.err == nil:
		delete(st.retry, r.e.Seq)
		st.failures = 0
		// Deleting is quick; do it even when ctx ends meanwhile.
		if err := d.box.Delete(context.WithoutCancel(ctx), r.e.Seq); err != nil {
			d.opts.Log.ErrorContext(ctx, "delete outbox entry", "seq", r.e.Seq, "err", err)
		}
	case errors.Is(r.err, ErrNotReady) && r.wakes != d.wakes.Load():
		st.cursor = 0 // woken since the handler started: try again now
	case errors.Is(r.err, ErrNotReady):
		if st.paused.Before(now) {
			d.opts.Log.InfoContext(ctx, "outbox paused until its consumer is ready", "pending", d.box.Len(), "reason", r.err.Error())
		}
		st.paused, st.cursor = now.Add(d.opts.MaxBackoff), 0
	default:
		attempts := st.retry[r.e.Seq].attempts + 1
		wait := d.backoff(attempts)
		st.setRetry(r.e.Seq, retryState{attempts: attempts, next: now.Add(wait)})
		if d.opts.Retries != nil {
			d.opts.Retries.Inc()
		}
		d.opts.Log.WarnContext(ctx, "outbox entry kept for a retry", "seq", r.e.Seq, "kind", ev.Kind, "repo", ev.Repository,
			"digest", ev.Digest, "attempt", attempts, "retry_in", wait, "err", r.err)
		st.failures++
		if st.failures >= breakerFailures {
			st.paused, st.cursor = now.Add(d.backoff(st.failures-breakerFailures+1)), 0
		}
	}
}

// backoff is MinBackoff doubled for each earlier attempt, up to MaxBackoff.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	b := d.opts.MinBackoff
	for i := 1; i < attempts && b < d.opts.MaxBackoff; i++ {
		b *= 2
	}
	return min(b, d.opts.MaxBackoff)
}

// setRetry remembers a retry, forgetting the one due last when full.
func (st *runState) setRetry(seq uint64, r retryState) {
	if _, ok := st.retry[seq]; !ok && len(st.retry) >= maxRetrying {
		var last uint64
		var lastAt time.Time
		for s, x := range st.retry {
			if x.next.After(lastAt) {
				last, lastAt = s, x.next
			}
		}
		delete(st.retry, last)
	}
	st.retry[seq] = r
}

// wakeAt is when the dispatcher has something to do without being told:
// the end of a pause, or (at the end of a pass) the first retry due, as
// seen at now.
func (st *runState) wakeAt(now time.Time) time.Time {
	if !st.paused.IsZero() && now.Before(st.paused) {
		return st.paused
	}
	if !st.atEnd {
		return time.Time{}
	}
	var first time.Time
	for seq, r := range st.retry {
		if st.inflight[seq] {
			continue
		}
		if first.IsZero() || r.next.Before(first) {
			first = r.next
		}
	}
	if soon := now.Add(10 * time.Millisecond); !first.IsZero() && first.Before(soon) {
		first = soon // due already: the next pass picks it up; never spin
	}
	return first
}
