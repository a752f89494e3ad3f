package trust

import (
	"container/list"
	"sync"
	"time"
)

// resultCache is a bounded LRU of signature results with a time to live.
// Keys name the signature, the subject, the repository and the policy
// version, so a result is reused only where it was computed.
type resultCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	now   func() time.Time
	order *list.List // front: most recently used; values are *cacheEntry
	items map[string]*list.Element
}

type cacheEntry struct {
	key     string
	sig     Signature
	expires time.Time
}

func newResultCache(max int, ttl time.Duration, now func() time.Time) *resultCache {
	return &resultCache{max: max, ttl: ttl, now: now, order: list.New(), items: map[string]*list.Element{}}
}

func (c *resultCache) get(key string) (Signature, bool) {
	if c.max <= 0 {
		return Signature{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return Signature{}, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return Signature{}, false
	}
	c.order.MoveToFront(el)
	return e.sig, true
}

func (c *resultCache) put(key string, sig Signature) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	expires := c.now().Add(c.ttl)
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.sig, e.expires = sig, expires
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, sig: sig, expires: expires})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}
