// Package ratelimit slows down password guessing against the token
// service: failed logins are counted per source address and per user, and
// each key over its threshold is locked out for a backoff that doubles
// with every further failure.
//
// A locked address cannot try any password; a locked user cannot log in
// except from an address where that user logged in successfully before, so
// an attacker who trips the limits does not lock the real user out.
// Counters live in memory, per replica. The package is pure bookkeeping: it
// must not import net/http or anything of ours.
package ratelimit

import (
	"errors"
	"sync"
	"time"
)

// Options configures a Limiter. Zero fields take the defaults shown.
type Options struct {
	// AddressFailures before an address is locked; default 5.
	AddressFailures int
	// UserFailures before a user is locked; default 20.
	UserFailures int
	// Backoff is the first lockout, doubled per further failure; default 1s.
	Backoff time.Duration
	// MaxBackoff caps a lockout; default 15m.
	MaxBackoff time.Duration
	// Window after the last failure in which failures are remembered;
	// default 15m.
	Window time.Duration
	// Trusted is how long a successful (user, address) pair bypasses the
	// user lockout; default 30 days.
	Trusted time.Duration
	// MaxEntries bounds memory; when exceeded, stale entries are dropped and
	// then the oldest. Default 100000.
	MaxEntries int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Limiter counts failed logins. It is safe for concurrent use.
type Limiter struct {
	opts    Options
	mu      sync.Mutex
	entries map[key]*entry
}

type key struct {
	kind byte // 'a' address, 'u' user, 't' trusted user+address
	user string
	addr string
}

type entry struct {
	failures    int
	last        time.Time
	lockedUntil time.Time
}

// New returns a Limiter. It returns an error for negative settings.
func New(opts Options) (*Limiter, error) {
	if opts.AddressFailures < 0 || opts.UserFailures < 0 || opts.Backoff < 0 ||
		opts.MaxBackoff < 0 || opts.Window < 0 || opts.Trusted < 0 || opts.MaxEntries < 0 {
		return nil, errors.New("ratelimit: negative setting")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&opts.AddressFailures, 5)
	def(&opts.UserFailures, 20)
	def(&opts.MaxEntries, 100000)
	defD(&opts.Backoff, time.Second)
	defD(&opts.MaxBackoff, 15*time.Minute)
	defD(&opts.Window, 15*time.Minute)
	defD(&opts.Trusted, 30*24*time.Hour)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Limiter{opts: opts, entries: map[key]*entry{}}, nil
}

// Allow reports whether user may try a password from addr now; if not, it
// also returns how long until the next attempt may be made. A rejected
// attempt must not be evaluated, and is not counted.
func (l *Limiter) Allow(user, addr string) (time.Duration, bool) {
	now := l.opts.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	if e := l.entries[key{kind: 'a', addr: addr}]; e != nil && e.lockedUntil.After(now) {
		wait = e.lockedUntil.Sub(now)
	}
	if e := l.entries[key{kind: 'u', user: user}]; e != nil && e.lockedUntil.After(now) && !l.trusted(user, addr, now) {
		wait = max(wait, e.lockedUntil.Sub(now))
	}
	return wait, wait == 0
}

func (l *Limiter) trusted(user, addr string, now time.Time) bool {
	e := l.entries[key{kind: 't', user: user, addr: addr}]
	return e != nil && now.Sub(e.last) < l.opts.Trusted
}

// Failure counts a failed login of user (as tried) from addr.
func (l *Limiter) Failure(user, addr string) {
	now := l.opts.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail(key{kind: 'a', addr: addr}, l.opts.AddressFailures, now)
	if user != "" {
		l.fail(key{kind: 'u', user: user}, l.opts.UserFailures, now)
	}
	l.prune(now)
}

func (l *Limiter) fail(k key, threshold int, now time.Time) {
	e := l.entries[k]
	if e == nil {
		e = &entry{}
		l.entries[k] = e
	}
	if now.Sub(e.last) > l.opts.Window && !e.lockedUntil.After(now) {
		e.failures = 0
	}
	e.failures++
	e.last = now
	if over := e.failures - threshold; over >= 0 {
		d := l.opts.Backoff
		for i := 0; i < over && d < l.opts.MaxBackoff; i++ {
			d *= 2
		}
		e.lockedUntil = now.Add(min(d, l.opts.MaxBackoff))
	}
}

// Success records a good login: it trusts the (user, address) pair and
// clears the user's failures unless the user is locked out (a login from a
// trusted address does not lift a lockout for everyone else). The
// address's failures stay, so an attacker cannot reset them by logging in
// to an account of their own.
func (l *Limiter) Success(user, addr string) {
	now := l.opts.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.entries[key{kind: 'u', user: user}]; e != nil && !e.lockedUntil.After(now) {
		delete(l.entries, key{kind: 'u', user: user})
	}
	l.entries[key{kind: 't', user: user, addr: addr}] = &entry{last: now}
	l.prune(now)
}

// prune drops stale entries when the map is over its bound, then, if still
// over, arbitrary unlocked ones.
func (l *Limiter) prune(now time.Time) {
	if len(l.entries) <= l.opts.MaxEntries {
		return
	}
	for k, e := range l.entries {
		keep := l.opts.Window
		if k.kind == 't' {
			keep = l.opts.Trusted
		}
		if now.Sub(e.last) > keep && !e.lockedUntil.After(now) {
			delete(l.entries, k)
		}
	}
	for k, e := range l.entries {
		if len(l.entries) <= l.opts.MaxEntries {
			return
		}
		if !e.lockedUntil.After(now) {
			delete(l.entries, k)
		}
	}
}
