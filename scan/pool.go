package scan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
)

// Errors returned by Pool.
var (
	// ErrQueueFull is returned by Submit and Do when the queue holds QueueSize jobs.
	ErrQueueFull = errors.New("scan queue full")
	// ErrPoolClosed is returned by Submit and Do once Run has returned, and by Do for a job
	// still queued when Run returned.
	ErrPoolClosed = errors.New("scan pool closed")
	// ErrPoolRunning is returned by Run when the pool is already running or has run.
	ErrPoolRunning = errors.New("scan pool already ran")
	// ErrJobPanicked is returned (wrapped, with the panic value) by Do when the job panicked.
	ErrJobPanicked = errors.New("scan job panicked")
)

// Job is one unit of work of a Pool, such as scanning one image. ctx is cancelled when the
// pool shuts down (and, for Do, when the caller's ctx is done); a job handles its own
// errors.
type Job func(ctx context.Context)

// PoolOptions size a Pool. The zero value means the defaults.
type PoolOptions struct {
	// Workers is how many jobs run at once; default GOMAXPROCS.
	Workers int
	// QueueSize is how many jobs may wait; default 64.
	QueueSize int
	// Logger receives the panics of submitted jobs (a worker survives them); default none.
	Logger *slog.Logger
}

// Pool runs jobs on a fixed number of workers from a bounded queue. Submitting never
// blocks: a full queue is an error the caller turns into back-pressure (retry later from the
// outbox, or answer a pushing client that the scan is pending).
type Pool struct {
	workers int
	log     *slog.Logger
	queue   chan task

	mu      sync.Mutex
	state   int // poolNew, poolRunning, poolClosed
	running int
}

const (
	poolNew = iota
	poolRunning
	poolClosed
)

type task struct {
	run      Job
	drop     func()    // called instead of run when the pool closes first
	panicked func(any) // called when run panics
}

// NewPool returns a pool; call Run to start its workers. Jobs submitted before Run wait in
// the queue. It returns an error for negative sizes.
func NewPool(opts PoolOptions) (*Pool, error) {
	if opts.Workers < 0 || opts.QueueSize < 0 {
		return nil, fmt.Errorf("scan pool: workers %d and queue size %d must not be negative", opts.Workers, opts.QueueSize)
	}
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = 64
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pool{workers: opts.Workers, log: opts.Logger, queue: make(chan task, opts.QueueSize)}, nil
}

// Submit queues job and returns at once: ErrQueueFull when the queue is full, ErrPoolClosed
// after Run has returned, ctx's error when ctx is already done. ctx is not passed to the
// job, which runs under Run's ctx.
func (p *Pool) Submit(ctx context.Context, job Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.enqueue(task{run: job, drop: func() {}, panicked: func(v any) {
		p.log.Error("scan job panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	}})
}

// Do queues job and waits for it to finish, for a caller that needs the result (a scan at
// a tag push). The job's ctx is also cancelled when ctx is done; a job still queued then is
// skipped. Do returns nil when the job ran to its end, ErrQueueFull at once when the queue
// is full, ErrPoolClosed when the pool closed first, or ctx's error.
func (p *Pool) Do(ctx context.Context, job Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	t := task{
		run: func(runCtx context.Context) {
			if err := ctx.Err(); err != nil {
				done <- err
				return
			}
			jobCtx, cancel := context.WithCancel(runCtx)
			defer cancel()
			stop := context.AfterFunc(ctx, cancel)
			defer stop()
			job(jobCtx)
			done <- nil
		},
		drop:     func() { done <- ErrPoolClosed },
		panicked: func(v any) { done <- fmt.Errorf("%w: %v", ErrJobPanicked, v) },
	}
	if err := p.enqueue(t); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Pool) enqueue(t task) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == poolClosed {
		return ErrPoolClosed
	}
	select {
	case p.queue <- t:
		return nil
	default:
		return ErrQueueFull
	}
}

func (p *Pool) runTask(ctx context.Context, t task) {
	p.mu.Lock()
	p.running++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running--
		p.mu.Unlock()
		if v := recover(); v != nil {
			t.panicked(v)
		}
	}()
	t.run(ctx)
}

// PoolStats is a snapshot of a pool's load, for metrics.
type PoolStats struct {
	Queued, Running, Workers, QueueSize int
}

// Stats returns the pool's current load.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Queued: len(p.queue), Running: p.running, Workers: p.workers, QueueSize: cap(p.queue)}
}

// Run runs queued jobs on the workers until ctx is done, then waits for the running jobs
// (whose ctx is cancelled), drops the queued ones and returns nil. It returns
// ErrPoolRunning when called a second time.
func (p *Pool) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.state != poolNew {
		p.mu.Unlock()
		return ErrPoolRunning
	}
	p.state = poolRunning
	p.mu.Unlock()

	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case t := <-p.queue:
					if ctx.Err() != nil {
						t.drop()
						return
					}
					p.runTask(ctx, t)
				}
			}
		})
	}
	wg.Wait()

	p.mu.Lock()
	p.state = poolClosed
	p.mu.Unlock()
	for {
		select {
		case t := <-p.queue:
			t.drop()
		default:
			return nil
		}
	}
}
