package front

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/portcullis/portcullis/internal/api"
)

// Barriers defers the syncs of a request's storage writes to one barrier,
// which the handler waits for before it answers a write with success.
type Barriers interface {
	// Barrier returns ctx carrying a new barrier, and the function that
	// waits for it; an error from wait means the writes may not be durable.
	Barrier(ctx context.Context) (bctx context.Context, wait func(context.Context) error)
}

// writes reports a method whose success acknowledges storage writes.
func writes(method string) bool {
	switch method {
	case http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// barrierWriter holds a success status back until the request's barrier
// has been passed; if it fails, the client gets a 500 instead and nothing
// the handler writes after.
type barrierWriter struct {
	http.ResponseWriter
	r     *http.Request
	wait  func(context.Context) error
	log   *slog.Logger
	state barrierState
}

type barrierState int

const (
	unanswered barrierState = iota
	answered
	refused // the barrier failed: the handler's answer is dropped
)

func (w *barrierWriter) WriteHeader(code int) {
	switch {
	case w.state == refused:
		return
	case w.state == answered || code < http.StatusOK:
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if code < http.StatusMultipleChoices {
		if err := w.wait(w.r.Context()); err != nil {
			w.state = refused
			clear(w.Header())
			api.WriteError(w.ResponseWriter, w.r, w.log, api.Internal("the storage did not confirm the write; try again", err))
			return
		}
	}
	w.state = answered
	w.ResponseWriter.WriteHeader(code)
}

func (w *barrierWriter) Write(p []byte) (int, error) {
	if w.state == unanswered {
		w.WriteHeader(http.StatusOK)
	}
	if w.state == refused {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Flush answers first, as net/http would.
func (w *barrierWriter) Flush() {
	if w.state == unanswered {
		w.WriteHeader(http.StatusOK)
	}
	if w.state == answered {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *barrierWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish answers a handler that wrote nothing with 200, as net/http would,
// once the barrier is passed.
func (w *barrierWriter) finish() {
	if w.state == unanswered {
		w.WriteHeader(http.StatusOK)
	}
}
