package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// recorderQueue is how many events a Recorder holds before Append waits:
// enough for every request of a busy registry to queue its event while one
// transaction commits.
const recorderQueue = 4096

// recorderBatch bounds the events committed in one transaction.
const recorderBatch = 512

// ErrRecorderClosed is returned by Append once the Recorder is closed.
var ErrRecorderClosed = errors.New("outbox recorder closed")

// Recorder appends events to one or more outboxes of one database in the
// background, for the front handler: a request queues its event and is
// done, and one goroutine commits whatever is queued in one transaction,
// every outbox at once. Committing a bbolt transaction waits for the disk
// twice; a push no longer waits for it, and concurrent pushes share it.
//
// An event is durable once its transaction commits, a few milliseconds
// after Append returns: a crash in between loses it, as it loses an event
// whose append failed (the failure is logged). Each consumer's reconcile
// pass repairs what its outbox missed. Events are committed in the order
// they were queued.
type Recorder struct {
	db    *bolt.DB
	boxes []*Outbox
	log   *slog.Logger

	mu     sync.RWMutex // held for reading while queueing; Close takes it to close queue
	closed bool
	queue  chan Event
	done   chan struct{} // closed when the goroutine has committed everything and returned
}

// NewRecorder starts a Recorder appending each event to every one of boxes,
// which must share one database. Close it before the database.
func NewRecorder(log *slog.Logger, boxes ...*Outbox) (*Recorder, error) {
	if len(boxes) == 0 {
		return nil, errors.New("outbox recorder: no outbox")
	}
	for _, b := range boxes[1:] {
		if b.db != boxes[0].db {
			return nil, errors.New("outbox recorder: the outboxes are in different databases")
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{db: boxes[0].db, boxes: boxes, log: log, queue: make(chan Event, recorderQueue), done: make(chan struct{})}
	go r.run()
	return r, nil
}

// Append queues e for every outbox and returns 0: its sequence numbers are
// known once it is committed. It returns ErrInvalidEvent for an incomplete
// event, ctx's error when ctx ends while the queue is full, and
// ErrRecorderClosed after Close.
func (r *Recorder) Append(ctx context.Context, e Event) (uint64, error) {
	if err := check(e); err != nil {
		return 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return 0, ErrRecorderClosed
	}
	select {
	case r.queue <- e:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Close stops taking events and returns once every queued event is
// committed (or its failure logged).
func (r *Recorder) Close() error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.mu.Unlock()
	<-r.done
	return nil
}

// run commits queued events until the queue is closed and empty.
func (r *Recorder) run() {
	defer close(r.done)
	batch := make([]Event, 0, recorderBatch)
	for e := range r.queue {
		batch = append(batch[:0], e)
	more:
		for len(batch) < recorderBatch {
			select {
			case e, ok := <-r.queue:
				if !ok {
					break more
				}
				batch = append(batch, e)
			default:
				break more
			}
		}
		r.commit(batch)
	}
}

// commit appends batch to every outbox in one transaction. When that
// fails, each event is tried alone, so that one bad event costs only
// itself, and each failure is logged.
func (r *Recorder) commit(batch []Event) {
	data := make([][]byte, len(batch))
	for i := range batch {
		var err error
		if data[i], err = encode(&batch[i]); err != nil {
			r.failed(batch[i], err)
		}
	}
	if err := r.put(data); err == nil || len(batch) == 1 {
		if err != nil {
			r.failed(batch[0], err)
		}
		return
	}
	for i := range batch {
		if data[i] == nil {
			continue
		}
		if err := r.put(data[i : i+1]); err != nil {
			r.failed(batch[i], err)
		}
	}
}

// put stores the encoded events (nil ones skipped) in every outbox in one
// transaction.
func (r *Recorder) put(data [][]byte) error {
	n := 0
	err := r.db.Update(func(tx *bolt.Tx) error {
		n = 0
		for _, d := range data {
			if d == nil {
				continue
			}
			for _, b := range r.boxes {
				if _, err := b.put(tx, d); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit %d events: %w", len(data), err)
	}
	for _, b := range r.boxes {
		b.added(n)
	}
	return nil
}

func (r *Recorder) failed(e Event, err error) {
	r.log.Error("record event", "kind", e.Kind, "repo", e.Repository, "digest", e.Digest, "ref", e.Tag, "err", err)
}
