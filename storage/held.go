package storage

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// A small upload's commit stores nothing. distribution commits an upload's
// data, checks it (Stat, the hash state, or a read) and moves it to the
// blob's path, all within the request that completes the upload; only then
// does the client get its 201. For an upload whose data never filled a part,
// Commit keeps the bytes in memory (a held commit): the checks read them
// there, and Move puts them at the blob's path in one request instead of a
// PUT of the upload's data, a COPY and a DELETE. The upload's pending tail
// stays until the upload's directory is deleted, in the same request as the
// rest of the directory, which then needs no listing of writer state: the
// data is distribution's only writer in an upload's directory, and the
// commit knows its tail.
//
// Nothing acknowledged rests on memory alone: until Move has stored the
// blob, the client has no answer, and the tail in the bucket still holds
// the upload as it was before the commit, so a process that dies meanwhile
// leaves an upload the client can complete again. Every other way out of
// the request brings the bucket to what a stored commit would have left
// (see settle): a failed check or move (distribution cancels the committed
// writer), a new writer on the path, a PutContent there.

// heldMax is the largest upload a commit holds; heldBudget bounds the bytes
// held at once, beyond which commits are stored as before.
const (
	heldMax    = smallBuffer
	heldBudget = 64 << 20
)

// heldTTL is the age past which a held commit that nothing moved, settled
// or deleted (its request died) may be dropped to make room: it holds
// nothing acknowledged.
const heldTTL = 10 * time.Minute

// maxHeld bounds the held commits, moved ones included (whose bytes are
// gone but whose entries stay until their upload's directory is deleted):
// past it, entries older than heldTTL are dropped, and a commit that finds
// no room is stored as before.
const maxHeld = 4096

// held is one held commit of upload data.
type held struct {
	w       *writer // the committed writer
	data    []byte  // nil once moved
	tailKey string
	mod     time.Time
	hash    *hashState // the hash state at len(data) that the writer carried, or nil
	moved   bool       // Move stored the data at the blob's path
	// keys are those of everything in the upload's directory (see
	// hashStates), nil when unknown: the delete of the directory then
	// lists it.
	keys []string
}

// heldCommits are the held commits of this process, by upload data path.
type heldCommits struct {
	now   func() time.Time
	mu    sync.Mutex
	m     map[string]*held
	bytes int
}

func newHeldCommits(now func() time.Time) *heldCommits {
	return &heldCommits{now: now, m: map[string]*held{}}
}

// hold records h for path, unless the budget has no room for it.
func (c *heldCommits) hold(path string, h *held) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bytes+len(h.data) > heldBudget || len(c.m) >= maxHeld {
		now := c.now()
		for p, e := range c.m {
			if now.Sub(e.mod) > heldTTL {
				c.bytes -= len(e.data)
				delete(c.m, p)
			}
		}
		if c.bytes+len(h.data) > heldBudget || len(c.m) >= maxHeld {
			return false
		}
	}
	if old := c.m[path]; old != nil {
		c.bytes -= len(old.data)
	}
	c.m[path] = h
	c.bytes += len(h.data)
	return true
}

// unmoved returns the held commit at path whose data Move has not stored.
func (c *heldCommits) unmoved(path string) (*held, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.m[path]
	if h == nil || h.moved {
		return nil, false
	}
	return h, true
}

// get returns the held commit at path, moved or not.
func (c *heldCommits) get(path string) *held {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[path]
}

// markMoved records that h's data is stored at the blob's path, and lets go
// of the bytes.
func (c *heldCommits) markMoved(path string, h *held) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[path] != h {
		return
	}
	c.bytes -= len(h.data)
	c.m[path] = &held{w: h.w, tailKey: h.tailKey, mod: h.mod, moved: true, keys: h.keys}
}

// take removes and returns the held commit at path, if it is h (or any,
// when h is nil).
func (c *heldCommits) take(path string, h *held) *held {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[path]
	if e == nil || h != nil && e.w != h.w {
		return nil
	}
	c.bytes -= len(e.data)
	delete(c.m, path)
	return e
}

// takeUnder removes and returns the held commits at path and under it.
func (c *heldCommits) takeUnder(path string) []*held {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil
	}
	var out []*held
	prefix := strings.TrimSuffix(path, "/") + "/"
	for p, e := range c.m {
		if p == path || strings.HasPrefix(p, prefix) {
			out = append(out, e)
			c.bytes -= len(e.data)
			delete(c.m, p)
		}
	}
	return out
}

// restore puts back held commits that takeUnder returned, when the delete
// that took them failed.
func (c *heldCommits) restore(hs []*held) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range hs {
		if _, ok := c.m[h.w.path]; !ok {
			c.m[h.w.path] = h
			c.bytes += len(h.data)
		}
	}
}

// hold keeps the commit of w, a writer of upload data that sent no part, in
// memory, and reports whether it did.
func (w *writer) hold(hash *hashState, states hashStates) bool {
	if w.uploadID != "" || !isUploadData(w.path) || len(w.buf) > heldMax {
		return false
	}
	// A copy of its length: the writer's buffer grows by doubling from
	// 64 KiB, and the budget counts what is held.
	data := bytes.Clone(w.buf)
	h := &held{w: w, data: data, tailKey: w.tailKey, mod: w.d.commits.now(), hash: hash, keys: w.d.uploadKeys(w.path, states)}
	return w.d.held.hold(w.path, h) // h owns the bytes: the writer writes no more
}

// settle brings the bucket to what a stored commit of the held commit at
// path would have left there: the data at path unless Move stored it at
// the blob's path, and no pending tail. With h nil it settles any held
// commit at path, else only h's writer's.
func (d *driver) settle(ctx context.Context, path string, h *held) error {
	h = d.held.take(path, h)
	if h == nil {
		return nil
	}
	if h.moved {
		// A move removes its source, which an earlier commit may have
		// stored.
		if err := d.removeKeys(ctx, []string{d.key(path), h.tailKey}); err != nil {
			return translate("move: remove", path, err)
		}
		return nil
	}
	_, err := d.putObject(ctx, d.key(path), h.data,
		minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true})
	if err != nil {
		return translate("commit", path, err)
	}
	err = d.client.RemoveObject(ctx, d.bucket, h.tailKey, minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return translate("commit: remove tail", path, err)
	}
	return nil
}

// heldGone reports whether path is upload data whose held commit Move
// stored elsewhere: reads answer that nothing is there, as after a move
// (an object an earlier commit left there goes with the upload's directory
// or when the commit is settled).
func (d *driver) heldGone(path string) bool {
	h := d.held.get(path)
	return h != nil && h.moved
}

// moveHeld stores the held data at path sourcePath at destPath.
func (d *driver) moveHeld(ctx context.Context, sourcePath, destPath string, h *held) error {
	if sourcePath == destPath {
		return nil
	}
	_, err := d.putObject(ctx, d.key(destPath), h.data,
		minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true})
	if err != nil {
		return translate("move", sourcePath+" to "+destPath, err)
	}
	d.held.markMoved(sourcePath, h)
	return nil
}
