package replication

import (
	"fmt"
	"sync"
	"time"
)

// State is what a Remote knows of the remote's health, for an API or a
// page that shows it.
type State struct {
	// Available is false while the circuit breaker is open: calls fail at
	// once with ErrUnavailable (except one trial call after OpenFor).
	Available bool
	// Failures counts the consecutive failed calls (ErrUnavailable).
	Failures int
	// Since is when the current run of failures began, or when the remote
	// last became available again; zero when nothing happened yet.
	Since time.Time
	// LastError is the message of the last failure, "" after a success.
	LastError string
	// Refused is the message of the last refusal of the registry's
	// credentials (401 or 403 after the auth flow), "" after a call the
	// remote accepted. Refusals do not count as failures.
	Refused string
}

// breaker is a consecutive-failure circuit breaker with one trial call
// when half open.
type breaker struct {
	threshold int
	openFor   time.Duration
	now       func() time.Time

	mu        sync.Mutex
	failures  int
	since     time.Time
	lastError string
	refused   string
	openUntil time.Time // zero while closed
	trial     bool      // a trial call is in flight
}

// allow reports whether a call may be sent. When it may not, err wraps
// ErrUnavailable with what the operator needs to know. trial is true
// when the call is the one trial of a half-open breaker; the caller must
// then report its outcome with done (or release it with abandon).
func (b *breaker) allow(name string) (trial bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() {
		return false, nil
	}
	now := b.now()
	if !now.Before(b.openUntil) && !b.trial {
		b.trial = true
		return true, nil
	}
	wait := b.openUntil.Sub(now)
	if wait < 0 {
		wait = 0 // a trial is in flight
	}
	return false, fmt.Errorf("remote %s unavailable since %s (%d failures, last: %s), next try in %s: %w",
		name, b.since.Format(time.TimeOnly), b.failures, b.lastError, wait.Round(time.Second), ErrUnavailable)
}

// done records the outcome of a call: failed says whether the remote was
// unavailable. It returns the transition, for logging: opened or closed.
func (b *breaker) done(trial, failed bool, msg string) (opened, closed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if trial {
		b.trial = false
	}
	if !failed {
		wasDown := b.failures > 0
		closed = !b.openUntil.IsZero()
		b.failures, b.lastError, b.openUntil = 0, "", time.Time{}
		if wasDown {
			b.since = now
		}
		return false, closed
	}
	if b.failures == 0 {
		b.since = now
	}
	b.failures++
	b.lastError = msg
	if b.failures >= b.threshold && (b.openUntil.IsZero() || trial) {
		opened = b.openUntil.IsZero()
		b.openUntil = now.Add(b.openFor)
	}
	return opened, false
}

// abandon releases a trial whose outcome says nothing about the remote
// (the caller gave up).
func (b *breaker) abandon(trial bool) {
	if !trial {
		return
	}
	b.mu.Lock()
	b.trial = false
	b.mu.Unlock()
}

func (b *breaker) state() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return State{Available: b.openUntil.IsZero(), Failures: b.failures, Since: b.since, LastError: b.lastError, Refused: b.refused}
}

// credentials records whether the remote refused the credentials of a
// call it answered (msg, "" when it accepted them).
func (b *breaker) credentials(msg string) {
	b.mu.Lock()
	b.refused = msg
	b.mu.Unlock()
}
