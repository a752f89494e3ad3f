package cache

import (
	"context"
	"sync"
)

// flights runs one fill per key at a time: the callers that ask while it
// runs wait for its result. The fill runs under the Set's lifetime, not the
// first caller's request, so a client hanging up does not stop it.
type flights struct {
	mu sync.Mutex
	m  map[string]*flightCall
}

type flightCall struct {
	done chan struct{}
	res  Result
	err  error
}

func (s *Set) flight(ctx context.Context, key string, fn func(ctx context.Context) (Result, error)) (Result, error) {
	f := &s.fills
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]*flightCall{}
	}
	call, ok := f.m[key]
	if !ok {
		call = &flightCall{done: make(chan struct{})}
		f.m[key] = call
		fctx, cancel := context.WithTimeout(s.lifetime(), fillTimeout)
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			defer cancel()
			call.res, call.err = fn(fctx)
			f.mu.Lock()
			delete(f.m, key)
			f.mu.Unlock()
			close(call.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-call.done:
		return call.res, call.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
