package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Kind is what happened to a manifest.
type Kind string

// The kinds of events.
const (
	// KindPush is a manifest stored by digest.
	KindPush Kind = "push"
	// KindTag is a manifest stored under a tag (and so also pushed).
	KindTag Kind = "tag"
	// KindDelete is a manifest (by digest) or a tag deleted.
	KindDelete Kind = "delete"
)

// Event is one successful write to the registry.
type Event struct {
	Kind       Kind          `json:"kind"`
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest,omitempty"`
	Tag        string        `json:"tag,omitempty"`
	MediaType  string        `json:"mediaType,omitempty"`
	// Subject is the manifest's subject, for a referrer (a signature, an
	// SBOM, a scan report).
	Subject digest.Digest `json:"subject,omitempty"`
	// Pusher is the login of the client that made the write, "" when
	// anonymous or auth is off.
	Pusher string    `json:"pusher,omitempty"`
	Time   time.Time `json:"time"`
}

// Entry is an event in the outbox with its sequence number.
type Entry struct {
	Seq   uint64
	Event Event
}

// Errors returned by Outbox.
var (
	// ErrInvalidEvent is returned by Append for an event without a known
	// kind, a repository, or a digest or tag.
	ErrInvalidEvent = errors.New("invalid outbox event")
)

// Outbox is one consumer's durable queue of events.
type Outbox struct {
	db       *bolt.DB
	bucket   []byte
	pending  atomic.Int64
	appended chan struct{}
}

// New opens the outbox name in db, creating its bucket. It returns an error
// when the bucket cannot be created or counted.
func New(db *bolt.DB, name string) (*Outbox, error) {
	if db == nil || name == "" {
		return nil, errors.New("outbox: a database and a name are required")
	}
	o := &Outbox{db: db, bucket: []byte("outbox/" + name), appended: make(chan struct{}, 1)}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(o.bucket)
		if err != nil {
			return err
		}
		o.pending.Store(int64(b.Stats().KeyN))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", name, err)
	}
	return o, nil
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// Append writes e durably and returns its sequence number, which is greater
// than that of every earlier entry. It returns ErrInvalidEvent for an
// incomplete event, ctx's error when ctx is done, or the database's error.
func (o *Outbox) Append(ctx context.Context, e Event) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := check(e); err != nil {
		return 0, err
	}
	data, err := encode(&e)
	if err != nil {
		return 0, err
	}
	var seq uint64
	err = o.db.Update(func(tx *bolt.Tx) error {
		seq, err = o.put(tx, data)
		return err
	})
	if err != nil {
		return 0, err
	}
	o.added(1)
	return seq, nil
}

// check returns ErrInvalidEvent, wrapped, for an event without a known
// kind, a repository, or a digest or tag.
func check(e Event) error {
	switch {
	case e.Kind != KindPush && e.Kind != KindTag && e.Kind != KindDelete:
		return fmt.Errorf("%w: kind %q", ErrInvalidEvent, e.Kind)
	case e.Repository == "":
		return fmt.Errorf("%w: no repository", ErrInvalidEvent)
	case e.Digest == "" && e.Tag == "":
		return fmt.Errorf("%w: neither digest nor tag", ErrInvalidEvent)
	}
	return nil
}

// encode stamps e with the time if it has none and returns it as stored.
func encode(e *Event) ([]byte, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode outbox event: %w", err)
	}
	return data, nil
}

// put stores an encoded event in tx under the outbox's next sequence
// number; once tx has committed, call added.
func (o *Outbox) put(tx *bolt.Tx, data []byte) (uint64, error) {
	b := tx.Bucket(o.bucket)
	seq, err := b.NextSequence()
	if err == nil {
		err = b.Put(key(seq), data)
	}
	if err != nil {
		return 0, fmt.Errorf("append to %s: %w", o.bucket, err)
	}
	return seq, nil
}

// added counts n committed entries and wakes the consumer.
func (o *Outbox) added(n int) {
	o.pending.Add(int64(n))
	select {
	case o.appended <- struct{}{}:
	default:
	}
}

// Pass stores e, an entry of another outbox passed on to this one, under
// its own sequence number: passing the same entry again (its first outbox
// kept it after a crash) stores nothing more. An outbox that entries are
// passed on to takes no Append. It returns ErrInvalidEvent for an entry
// without a sequence number, ctx's error, or the database's.
func (o *Outbox) Pass(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.Seq == 0 {
		return fmt.Errorf("%w: no sequence number", ErrInvalidEvent)
	}
	data, err := json.Marshal(e.Event)
	if err != nil {
		return fmt.Errorf("encode outbox event: %w", err)
	}
	added := false
	err = o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(o.bucket)
		k := key(e.Seq)
		if b.Get(k) != nil {
			return nil
		}
		added = true
		return b.Put(k, data)
	})
	if err != nil {
		return fmt.Errorf("pass %d to %s: %w", e.Seq, o.bucket, err)
	}
	if added {
		o.pending.Add(1)
		select {
		case o.appended <- struct{}{}:
		default:
		}
	}
	return nil
}

// Read returns up to limit entries after sequence number after, oldest
// first. An entry that cannot be decoded is returned with a zero Event (its
// consumer drops it). It returns ctx's error or the database's.
func (o *Outbox) Read(ctx context.Context, after uint64, limit int) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(o.bucket).Cursor()
		k, v := c.Seek(key(after + 1))
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			e := Entry{Seq: binary.BigEndian.Uint64(k)}
			_ = json.Unmarshal(v, &e.Event)
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", o.bucket, err)
	}
	return out, nil
}

// Delete removes entry seq. Deleting an entry that is not there is not an
// error. It returns the database's error.
func (o *Outbox) Delete(ctx context.Context, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	removed := false
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(o.bucket)
		k := key(seq)
		if b.Get(k) == nil {
			return nil
		}
		removed = true
		return b.Delete(k)
	})
	if err != nil {
		return fmt.Errorf("delete %d from %s: %w", seq, o.bucket, err)
	}
	if removed {
		o.pending.Add(-1)
	}
	return nil
}

// Len returns how many entries are waiting.
func (o *Outbox) Len() int { return int(o.pending.Load()) }

// Appended receives (at most one value at a time) after each Append, for
// the one consumer that waits for new entries.
func (o *Outbox) Appended() <-chan struct{} { return o.appended }

// Fanout records each event in several outboxes, one per consumer.
type Fanout []*Outbox

// Append appends e to each outbox and returns the first one's sequence
// number. It tries every outbox and returns their errors joined.
func (f Fanout) Append(ctx context.Context, e Event) (uint64, error) {
	var first uint64
	var errs []error
	for i, o := range f {
		seq, err := o.Append(ctx, e)
		if err != nil {
			errs = append(errs, err)
		}
		if i == 0 {
			first = seq
		}
	}
	return first, errors.Join(errs...)
}
