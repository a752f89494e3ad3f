package storage

import (
	"context"
	"errors"
	"sync"
)

// writeFailuresKey is the context key of a request's writeFailures.
type writeFailuresKey struct{}

// writeFailures collects the errors of writer Closes made with a request's
// context. distribution's upload handlers ignore the error of Close, which
// stores an upload's state for its next request: without this record a
// PATCH whose state was not stored would be answered 202, and the upload's
// next request would find the state missing.
type writeFailures struct {
	mu  sync.Mutex
	err error
}

// WithWriteFailures returns ctx carrying a record of the failures of the
// writes made with it that their callers may ignore, and the function that
// returns them (nil when there was none). Whoever answers the request must
// not acknowledge it when that function returns an error.
func WithWriteFailures(ctx context.Context) (context.Context, func(context.Context) error) {
	f := &writeFailures{}
	return context.WithValue(ctx, writeFailuresKey{}, f), func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.err
	}
}

// noteWriteFailure records err in ctx's record, if it carries one.
func noteWriteFailure(ctx context.Context, err error) {
	f, ok := ctx.Value(writeFailuresKey{}).(*writeFailures)
	if !ok || err == nil {
		return
	}
	f.mu.Lock()
	f.err = errors.Join(f.err, err)
	f.mu.Unlock()
}
