package server

import (
	"io"
	"net/http"
	"time"
)

// BodyPace bounds how slowly a request body may arrive. The zero value
// sets no bound.
type BodyPace struct {
	// MinRate is the slowest average rate, in bytes per second, once Grace
	// has passed; 0 sets no bound.
	MinRate int64
	// Grace is the head start of every body.
	Grace time.Duration
}

// pacedBody moves the connection's read deadline ahead of each read of a
// request body: the body must have delivered n bytes by start + Grace +
// n/MinRate, so a client that trickles a byte every few seconds is cut off
// while a large upload over a slow link (an average above MinRate) is not.
type pacedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	pace  BodyPace
	start time.Time
	n     int64
	// done is set once the body has ended: net/http clears the deadline
	// then, and it must not be set again.
	done bool
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	allowed := b.pace.Grace + time.Duration(float64(b.n)/float64(b.pace.MinRate)*float64(time.Second))
	// A writer that cannot set deadlines (a test recorder) is not bounded.
	_ = b.rc.SetReadDeadline(b.start.Add(allowed))
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// Close clears the deadline, so that a response written after the body was
// read is not cut short by it.
func (b *pacedBody) Close() error {
	b.done = true
	_ = b.rc.SetReadDeadline(time.Time{})
	return b.ReadCloser.Close()
}
