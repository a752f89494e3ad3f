package app

import (
	"io"
	"sync"
	"time"
)

// Bounds of a LogBuffer: what it holds before it writes, and for how long.
const (
	logBufferSize     = 64 << 10
	logBufferInterval = 100 * time.Millisecond
)

// LogBuffer collects the process's log output in memory and writes it to
// its destination in batches: at most logBufferInterval after a line was
// logged, as soon as logBufferSize bytes are waiting, at Flush and at
// Close. With the access log on, every request logs a line: unbuffered,
// each line is a write(2) of its own on the request's path.
//
// Batches are written by a timer's goroutine, outside the lock that Write
// takes: a request that logs waits only for its append, even while the
// destination is slow, unless the destination falls so far behind that
// four times logBufferSize are waiting (then it waits for the write).
// Batches are written in the order of their lines. Lines are never
// dropped: a line written after Close goes straight to the destination.
// Lines still in memory when the process dies without Close (a crash) are
// lost, which is why the logger flushes after every warning and error
// (see NewLogger).
type LogBuffer struct {
	out      io.Writer
	size     int
	interval time.Duration

	mu     sync.Mutex // guards the fields below
	buf    []byte     // lines not yet written
	spare  []byte     // the last batch written, for reuse
	timer  *time.Timer
	armed  bool // the timer will flush buf
	now    bool // ... at once: buf is full
	closed bool

	wmu sync.Mutex // held while a batch is written to out
}

// NewLogBuffer returns a LogBuffer writing to out. Call Close when done
// logging.
func NewLogBuffer(out io.Writer) *LogBuffer {
	return newLogBuffer(out, logBufferSize, logBufferInterval)
}

func newLogBuffer(out io.Writer, size int, interval time.Duration) *LogBuffer {
	b := &LogBuffer{out: out, size: size, interval: interval}
	b.timer = time.AfterFunc(time.Hour, b.flushLater)
	b.timer.Stop()
	return b
}

// Write adds p to the buffer. It reports an error only for a line
// written after Close, which goes to the destination at once.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wmu.Lock()
		defer b.wmu.Unlock()
		return b.out.Write(p)
	}
	b.buf = append(b.buf, p...)
	n := len(b.buf)
	switch {
	case n >= 4*b.size:
		// The destination falls behind: the caller waits for it
		// rather than the buffer growing without bound.
	case n >= b.size && !b.now:
		// Full: written at once, by the timer's goroutine, not by
		// the caller (a slog handler holds its lock while it writes).
		b.armed, b.now = true, true
		b.timer.Reset(0)
	case !b.armed:
		b.armed = true
		b.timer.Reset(b.interval)
	}
	b.mu.Unlock()
	if n >= 4*b.size {
		_ = b.Flush() // logging has no one to report to
	}
	return len(p), nil
}

// flushLater is the timer's flush.
func (b *LogBuffer) flushLater() {
	b.mu.Lock()
	b.armed, b.now = false, false
	b.mu.Unlock()
	_ = b.Flush() // logging has no one to report to
}

// Flush writes every line buffered so far, and returns the destination's
// error.
func (b *LogBuffer) Flush() error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	batch := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.mu.Unlock()
	if len(batch) == 0 {
		b.mu.Lock()
		b.spare = batch
		b.mu.Unlock()
		return nil
	}
	_, err := b.out.Write(batch)
	if cap(batch) <= 4*b.size {
		// Kept for the next batch, unless a burst made it large.
		b.mu.Lock()
		b.spare = batch[:0]
		b.mu.Unlock()
	}
	return err
}

// Close writes every line buffered so far; later lines go to the
// destination as they come.
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.armed = false
	b.timer.Stop()
	b.mu.Unlock()
	return b.Flush()
}
