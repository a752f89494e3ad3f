package token

import (
	"crypto/sha256"
	"sync"
	"time"
)

// verifiedCache remembers tokens whose signature and claims were verified,
// keyed by the SHA-256 of the exact token, so the many requests of one
// push or pull pay for one signature check. The time claims are checked
// again on every hit; entries leave when the token expires or to make room.
type verifiedCache struct {
	mu  sync.Mutex
	m   map[[32]byte]*Claims
	max int
}

func newVerifiedCache(size int) *verifiedCache {
	if size <= 0 {
		return nil
	}
	return &verifiedCache{m: make(map[[32]byte]*Claims), max: size}
}

func (c *verifiedCache) get(key [32]byte, now time.Time, leeway time.Duration) (*Claims, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	cl, ok := c.m[key]
	c.mu.Unlock()
	if !ok || !timely(cl, now, leeway) {
		return nil, false
	}
	return cl, true
}

func (c *verifiedCache) put(key [32]byte, cl *Claims, now time.Time, leeway time.Duration) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, v := range c.m {
			if !timely(v, now, leeway) {
				delete(c.m, k)
			}
		}
		// Still full: drop arbitrary entries (map order) down to 3/4.
		for k := range c.m {
			if len(c.m) < c.max*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = cl
}

// timely reports whether verified claims are still inside exp and nbf.
func timely(c *Claims, now time.Time, leeway time.Duration) bool {
	return now.Before(c.ExpiresAt.Add(leeway)) && !now.Add(leeway).Before(c.NotBefore.Time)
}

func cacheKey(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }
