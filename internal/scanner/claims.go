package scanner

import (
	"sync"

	"github.com/opencontainers/go-digest"
)

// claims makes sure one image is scanned (or restored) once at a time.
type claims struct {
	mu   sync.Mutex
	held map[string]chan struct{} // images being scanned, closed when done
}

func newClaims() *claims { return &claims{held: map[string]chan struct{}{}} }

// tryClaim claims repo@d, or returns busy, closed when the scan (or
// restore) that holds it is done. release must be called when busy is nil.
func (c *claims) tryClaim(repo string, d digest.Digest) (release func(), busy <-chan struct{}) {
	key := string(scannedKey(repo, d))
	c.mu.Lock()
	defer c.mu.Unlock()
	if held, ok := c.held[key]; ok {
		return nil, held
	}
	done := make(chan struct{})
	c.held[key] = done
	return func() {
		c.mu.Lock()
		delete(c.held, key)
		c.mu.Unlock()
		close(done)
	}, nil
}

// scanning reports whether a scan of repo@d is running.
func (c *claims) scanning(repo string, d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[string(scannedKey(repo, d))]
	return ok
}
