package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/replication"
)

const (
	// smallBlob is the size up to which a missing blob is fetched and
	// verified whole before the client gets a byte: a wrong one is a clean
	// 502, not a broken stream.
	smallBlob = 1 << 20
	// maxFetches bounds the blob downloads a replica runs at once.
	maxFetches = 32
	// chunkSize is the unit of copying from the remote.
	chunkSize = 1 << 20
	// stallTimeout cancels a fetch whose remote sends nothing for this
	// long.
	stallTimeout = 60 * time.Second
)

// fetcher runs one fetch per missing blob at a time, whichever cached
// repositories ask for it.
type fetcher struct {
	set      *Set
	dir      string
	slots    chan struct{} // bounds the fetches running at once
	mu       sync.Mutex
	inflight map[string]*fetch
}

// fetch is one blob being copied from a remote: spooled to a file that
// readers follow while it grows, and copied from there to storage behind
// the remote's stream, so that clients are paced by the remote alone.
type fetch struct {
	digest digest.Digest
	path   string
	name   string // the repository the fetch stores the blob in

	mu       sync.Mutex
	size     int64 // from the remote, -1 unknown
	written  int64 // bytes in the spool
	started  bool  // the remote answered (size known)
	verified bool  // every byte is in the spool and matched the digest
	done     bool  // stored, or failed
	err      error
	progress chan struct{} // closed and replaced on every change
}

func (f *fetch) notify() {
	close(f.progress)
	f.progress = make(chan struct{})
}

// fetchState is a fetch's state at one moment, and a channel closed on its
// next change.
type fetchState struct {
	written, size           int64
	started, verified, done bool
	err                     error
	next                    <-chan struct{}
}

func (f *fetch) state() fetchState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fetchState{written: f.written, size: f.size, started: f.started, verified: f.verified, done: f.done, err: f.err, next: f.progress}
}

// join returns the running fetch of d or starts one for name, and opens
// its spool for the caller.
func (b *fetcher) join(c *cache, name string, d digest.Digest) (*fetch, *os.File, error) {
	key := d.String()
	b.mu.Lock()
	defer b.mu.Unlock()
	if f, ok := b.inflight[key]; ok {
		file, err := os.Open(f.path)
		if err != nil {
			return nil, nil, fmt.Errorf("open spool: %w", err)
		}
		return f, file, nil
	}
	spool, err := os.CreateTemp(b.dir, "blob-*")
	if err != nil {
		return nil, nil, fmt.Errorf("create spool: %w", err)
	}
	reader, err := os.Open(spool.Name())
	if err != nil {
		spool.Close()
		os.Remove(spool.Name())
		return nil, nil, fmt.Errorf("open spool: %w", err)
	}
	f := &fetch{digest: d, path: spool.Name(), name: name, size: -1, progress: make(chan struct{})}
	b.inflight[key] = f
	b.set.background.Add(1)
	go func() {
		defer b.set.background.Done()
		err := b.run(b.set.lifetime(), c, name, f, spool)
		b.mu.Lock()
		delete(b.inflight, key)
		b.mu.Unlock()
		os.Remove(f.path) // readers keep their open files
		f.mu.Lock()
		f.done, f.err = true, err
		f.notify()
		f.mu.Unlock()
	}()
	return f, reader, nil
}

// ensure makes blob d of name present in storage, fetching it (or joining
// the running fetch) when missing, and waits for it.
func (b *fetcher) ensure(ctx context.Context, c *cache, name string, d digest.Digest) error {
	if b.set.haveBlob(ctx, name, d) || b.set.linkConfirmed(ctx, c, name, d) {
		return nil
	}
	f, file, err := b.join(c, name, d)
	if err != nil {
		return err
	}
	if file != nil {
		file.Close()
	}
	if f.name != name {
		// Fetched for another repository: name gets it only if the
		// remote has it there too.
		if _, err := c.Remote.HeadBlob(ctx, c.upstreamName(name), d); err != nil {
			return err
		}
	}
	for {
		st := f.state()
		if st.done {
			if st.err == nil && f.name != name && !b.set.linkStored(ctx, name, d) {
				return fmt.Errorf("link blob %s into %s: not stored", d, name)
			}
			return st.err
		}
		select {
		case <-st.next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// run copies blob d from the remote into the spool, where readers follow
// it, and from there into storage; the blob becomes visible only when its
// digest matched. Readers get the last byte once the digest matched, not
// after the (slower) commit to storage.
func (b *fetcher) run(ctx context.Context, c *cache, name string, f *fetch, spool *os.File) (err error) {
	defer spool.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// However many blobs clients ask for, a replica downloads at most
	// maxFetches at once; the others wait their turn (their clients see
	// the wait before the first byte).
	select {
	case b.slots <- struct{}{}:
		defer func() { <-b.slots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	body, size, err := c.Remote.GetBlob(ctx, c.upstreamName(name), f.digest)
	if err != nil {
		return err
	}
	defer body.Close()
	f.mu.Lock()
	f.size, f.started = size, true
	f.notify()
	f.mu.Unlock()

	stored := make(chan error, 1)
	go func() { stored <- b.store(ctx, name, f) }()
	if err := b.receive(ctx, cancel, c, f, body, spool); err != nil {
		cancel()
		<-stored
		return err
	}
	return <-stored
}

// receive reads the blob from the remote into the spool, hashing it, and
// marks the fetch verified when all of it matched the digest.
func (b *fetcher) receive(ctx context.Context, cancel context.CancelFunc, c *cache, f *fetch, body io.Reader, spool *os.File) error {
	verifier := f.digest.Verifier()
	stall := time.AfterFunc(stallTimeout, cancel)
	defer stall.Stop()
	buf := make([]byte, chunkSize)
	var n int64
	for {
		k, rerr := body.Read(buf)
		if k > 0 {
			stall.Reset(stallTimeout)
			if _, err := spool.Write(buf[:k]); err != nil {
				return fmt.Errorf("spool blob %s: %w", f.digest, err)
			}
			_, _ = verifier.Write(buf[:k])
			n += int64(k)
			f.mu.Lock()
			f.written = n
			f.notify()
			f.mu.Unlock()
			b.set.metrics.bytes(c.Remote.Name(), k)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				rerr = fmt.Errorf("nothing received for %s", stallTimeout)
			}
			return fmt.Errorf("%w: remote %s broke off blob %s after %d bytes: %v", replication.ErrUnavailable, c.Remote.Name(), f.digest, n, rerr)
		}
	}
	f.mu.Lock()
	size := f.size
	f.mu.Unlock()
	if size >= 0 && n != size {
		return fmt.Errorf("%w: remote %s sent %d bytes of blob %s, announced %d", replication.ErrDigestMismatch, c.Remote.Name(), n, f.digest, size)
	}
	if !verifier.Verified() {
		return fmt.Errorf("%w: remote %s sent content for blob %s whose digest is %s: nothing was stored",
			replication.ErrDigestMismatch, c.Remote.Name(), f.digest, digestOfFile(f.path, f.digest.Algorithm()))
	}
	f.mu.Lock()
	f.verified = true
	f.notify()
	f.mu.Unlock()
	return nil
}

// store copies the spool into storage as it grows, and commits the blob
// once the fetch is verified. It returns ctx's error when the fetch fails.
func (b *fetcher) store(ctx context.Context, name string, f *fetch) error {
	repo, err := b.set.repository(ctx, name)
	if err != nil {
		return err
	}
	w, err := repo.Blobs(ctx).Create(ctx)
	if err != nil {
		return fmt.Errorf("start storing blob %s: %w", f.digest, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = w.Cancel(context.WithoutCancel(ctx))
		}
	}()
	r, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer r.Close()
	buf := make([]byte, chunkSize)
	var off int64
	for {
		st := f.state()
		for off < st.written {
			k := min(int64(len(buf)), st.written-off)
			n, err := r.ReadAt(buf[:k], off)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return fmt.Errorf("store blob %s: %w", f.digest, werr)
				}
				off += int64(n)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read spool: %w", err)
			}
			if n == 0 {
				break
			}
		}
		if st.verified && off == st.written {
			if _, err := w.Commit(ctx, distribution.Descriptor{Digest: f.digest, Size: off, MediaType: "application/octet-stream"}); err != nil {
				return fmt.Errorf("commit blob %s: %w", f.digest, err)
			}
			committed = true
			return nil
		}
		select {
		case <-st.next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func digestOfFile(path string, alg digest.Algorithm) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	d, err := alg.FromReader(f)
	if err != nil {
		return "unknown"
	}
	return d.String()
}

// linkConfirmed links blob d into name's repository when the registry
// stores it already (for another repository: base layers are shared) and
// the remote confirms (one HEAD) that it has d in name's repository, and
// reports whether it did. Nothing is fetched for a blob stored once, and a
// blob pushed to a private repository is never served from a cache
// namespace by digest alone.
func (s *Set) linkConfirmed(ctx context.Context, c *cache, name string, d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	if _, err := s.driver.Stat(ctx, digests.BlobDataPath(d)); err != nil {
		return false
	}
	if _, err := c.Remote.HeadBlob(ctx, c.upstreamName(name), d); err != nil {
		return false
	}
	return s.linkStored(ctx, name, d)
}

// linkStored links blob d, stored already, into name's repository, and
// reports whether it did.
func (s *Set) linkStored(ctx context.Context, name string, d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	if _, err := s.driver.Stat(ctx, digests.BlobDataPath(d)); err != nil {
		return false
	}
	return s.driver.PutContent(ctx, digests.LayerLinkPath(name, d), []byte(d.String())) == nil
}

// haveBlob reports whether name's repository holds blob d.
func (s *Set) haveBlob(ctx context.Context, name string, d digest.Digest) bool {
	repo, err := s.repository(ctx, name)
	if err != nil {
		return false
	}
	_, err = repo.Blobs(ctx).Stat(ctx, d)
	return err == nil
}

// ServeBlob answers a GET or HEAD of blob d of name when the blob is not in
// storage yet: HEAD from the remote's answer, GET by streaming the fetch
// (joined with every other client's). It returns false, having written
// nothing, when the blob is in storage: the registry serves it.
func (s *Set) ServeBlob(w http.ResponseWriter, r *http.Request, name string, d digest.Digest) bool {
	c := s.owner(name)
	if c == nil || s.haveBlob(r.Context(), name, d) || s.linkConfirmed(r.Context(), c, name, d) {
		if c != nil {
			w.Header().Set(Header, string(Hit))
			s.metrics.request(c.Prefix, "blob", Hit, nil)
		}
		return false
	}
	ctx := r.Context()
	if r.Method == http.MethodHead {
		desc, err := c.Remote.HeadBlob(ctx, c.upstreamName(name), d)
		if err != nil {
			s.metrics.request(c.Prefix, "blob", Miss, err)
			s.writeError(w, r, s.blobError(c, name, d, err))
			return true
		}
		s.metrics.request(c.Prefix, "blob", Miss, nil)
		h := w.Header()
		h.Set(Header, string(Miss))
		h.Set("Docker-Content-Digest", d.String())
		h.Set("Content-Type", "application/octet-stream")
		if desc.Size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(desc.Size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return true
	}
	f, file, err := s.blobs.join(c, name, d)
	if err != nil {
		s.metrics.request(c.Prefix, "blob", Miss, err)
		s.writeError(w, r, &Error{Status: http.StatusInternalServerError, Code: "UNKNOWN", Message: "the blob could not be fetched", Err: err})
		return true
	}
	defer file.Close()
	if f.name != name {
		// Being fetched for another repository: served here only if the
		// remote has it here too, as linkConfirmed asks of a stored blob.
		if _, err := c.Remote.HeadBlob(ctx, c.upstreamName(name), d); err != nil {
			s.metrics.request(c.Prefix, "blob", Miss, err)
			s.writeError(w, r, s.blobError(c, name, d, err))
			return true
		}
	}
	served, err := s.stream(w, r, c, f, file)
	s.metrics.request(c.Prefix, "blob", Miss, err)
	if err == nil && f.name != name {
		// Fetched for another repository: link it here too.
		s.linkStored(context.WithoutCancel(ctx), name, d)
	}
	if served {
		return true
	}
	if err == nil {
		// A range request, or the fetch finished before anything was
		// streamed: the registry serves the stored blob.
		w.Header().Set(Header, string(Miss))
		return false
	}
	s.writeError(w, r, s.blobError(c, name, d, err))
	return true
}

// Header is the response header that says how a cache namespace served a
// read: hit, miss or stale.
const Header = "X-Portcullis-Cache"

// stream sends the fetch's bytes to the client as they arrive. It returns
// served false (nothing written) when the client should be answered
// otherwise: the fetch failed before streaming began (err), or finished,
// or the request asks for a range (nil error). The last byte is held back
// until the digest is verified: a client never receives a whole wrong blob.
func (s *Set) stream(w http.ResponseWriter, r *http.Request, c *cache, f *fetch, file *os.File) (bool, error) {
	ctx := r.Context()
	// Wait for the remote's answer (its size); small blobs whole.
	var st fetchState
	for {
		st = f.state()
		if st.done {
			return false, st.err
		}
		if st.started && r.Header.Get("Range") == "" && (st.size < 0 || st.size > smallBlob) && st.written > 0 {
			break // large (or of unknown size): stream it while it arrives
		}
		select {
		case <-st.next:
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
	h := w.Header()
	h.Set(Header, string(Miss))
	h.Set("Docker-Content-Digest", f.digest.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	if st.size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(st.size, 10))
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	buf := make([]byte, chunkSize)
	var sent int64
	for {
		st = f.state()
		limit := st.written
		if !st.verified {
			limit-- // the last byte waits until the digest matched
		}
		for sent < limit {
			k := min(int64(len(buf)), limit-sent)
			m, err := file.ReadAt(buf[:k], sent)
			if m > 0 {
				if _, werr := w.Write(buf[:m]); werr != nil {
					return true, werr
				}
				sent += int64(m)
			}
			if err != nil && !errors.Is(err, io.EOF) {
				panic(http.ErrAbortHandler)
			}
			if m == 0 {
				break
			}
		}
		_ = rc.Flush()
		switch {
		case st.verified && sent == st.written:
			return true, nil // all of it, and right (storing it may still fail: the next pull fetches again)
		case st.done && !st.verified:
			s.log.WarnContext(ctx, "cached blob stream broken off: the fetch failed", "digest", f.digest, "upstream", c.Remote.Name(), "err", st.err)
			panic(http.ErrAbortHandler) // the client sees a broken transfer
		}
		select {
		case <-st.next:
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
}

func (s *Set) blobError(c *cache, name string, d digest.Digest, err error) error {
	if errors.Is(err, replication.ErrNotFound) {
		return errcode.ErrorCodeBlobUnknown.WithMessage(fmt.Sprintf("remote %s has no blob %s in %s", c.Remote.Name(), d, c.upstreamName(name)))
	}
	return s.upstreamError(c, "blob "+d.String(), name, err)
}
