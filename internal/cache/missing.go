package cache

import (
	"sync"
	"time"
)

const (
	// maxMissingFor bounds how long a tag the remote does not have is
	// answered 404 without asking it again (tagTTL when shorter).
	maxMissingFor = time.Minute
	// maxMissing bounds the tags remembered as missing; beyond it the
	// memory starts over.
	maxMissing = 10000
)

// missingTags remembers, briefly, the tags a remote answered 404 for.
type missingTags struct {
	mu sync.Mutex
	m  map[string]missingTag
}

type missingTag struct {
	err   error
	until time.Time
}

// recent returns the remote's answer for key when it said, until a moment
// ago, that it has no such tag; nil otherwise.
func (mt *missingTags) recent(key string, now time.Time) error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	e, ok := mt.m[key]
	if !ok {
		return nil
	}
	if now.After(e.until) {
		delete(mt.m, key)
		return nil
	}
	return e.err
}

func (mt *missingTags) remember(key string, err error, until time.Time) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if mt.m == nil || len(mt.m) >= maxMissing {
		mt.m = map[string]missingTag{}
	}
	mt.m[key] = missingTag{err: err, until: until}
}
