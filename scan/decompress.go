package scan

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Magic numbers of the layer compressions the OCI image spec allows.
const (
	gzipMagic = "\x1f\x8b"
	zstdMagic = "\x28\xb5\x2f\xfd"
)

// Decompress returns the uncompressed stream of a layer blob: gzip and zstd
// are recognised by their magic numbers, anything else is returned as it is
// (an uncompressed tar). Decompression runs ahead of the reader on its own
// goroutine, so that on two cores unpacking overlaps the tar parsing and
// hashing done by the reader. Closing the returned reader stops that
// goroutine and closes rc.
func Decompress(rc io.ReadCloser) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 1<<16)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte(gzipMagic)):
		z, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, err
		}
		return newReadAhead(z, closers{z, rc}), nil
	case bytes.HasPrefix(magic, []byte(zstdMagic)):
		// The window bounds the decoder's memory whatever the frame claims.
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			rc.Close()
			return nil, err
		}
		zr := z.IOReadCloser()
		return newReadAhead(zr, closers{zr, rc}), nil
	}
	return newReadAhead(br, rc), nil
}

// closers closes each in order and returns the first error.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// errDecompressPanic is the read error of a stream whose decompressor panicked.
var errDecompressPanic = errors.New("decompressing the layer panicked")

// readAhead reads src on a goroutine into a few large buffers that Read
// hands out in order.
type readAhead struct {
	ready  chan chunk
	free   chan []byte
	quit   chan struct{} // closed by Close
	done   chan struct{} // closed when fill returns
	closer io.Closer
	once   sync.Once

	cur []byte // the unread part of the chunk being read
	buf []byte // cur's whole buffer, returned to free when drained
	err error
}

type chunk struct {
	buf []byte
	n   int
	err error
}

const (
	readAheadBuffers = 4
	readAheadSize    = 256 << 10
)

func newReadAhead(src io.Reader, closer io.Closer) *readAhead {
	r := &readAhead{
		ready:  make(chan chunk, readAheadBuffers),
		free:   make(chan []byte, readAheadBuffers),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		closer: closer,
	}
	go r.fill(src)
	return r
}

func (r *readAhead) fill(src io.Reader) {
	defer close(r.done)
	defer close(r.ready) // a Read after the end or after Close returns at once
	defer func() {
		// A decompressor bug met by a hostile stream fails this read, not the process.
		if v := recover(); v != nil {
			select {
			case r.ready <- chunk{err: fmt.Errorf("%w: %v", errDecompressPanic, v)}:
			case <-r.quit:
			}
		}
	}()
	// Buffers are made as the reader falls behind, up to readAheadBuffers: a
	// layer smaller than a buffer (a distroless base) costs one buffer, not
	// all of them.
	made := 0
	for {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.quit:
			return
		default:
			if made < readAheadBuffers {
				buf = make([]byte, readAheadSize)
				made++
				break
			}
			select {
			case buf = <-r.free:
			case <-r.quit:
				return
			}
		}
		n, err := fillBuffer(src, buf)
		select {
		case r.ready <- chunk{buf: buf, n: n, err: err}:
		case <-r.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// fillBuffer reads until buf is full or src fails; unlike io.ReadFull it
// returns src's own error (io.EOF at the end, io.ErrUnexpectedEOF only for a
// truncated stream).
func fillBuffer(src io.Reader, buf []byte) (int, error) {
	n, empty := 0, 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty >= 100 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

func (r *readAhead) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.buf != nil {
			r.free <- r.buf
			r.buf = nil
		}
		c, ok := <-r.ready
		if !ok {
			return 0, io.ErrClosedPipe
		}
		r.buf, r.cur, r.err = c.buf, c.buf[:c.n], c.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the goroutine, waits for it and closes the underlying blob. A
// read of the blob in progress is waited for: the blob was opened with the
// scan's context, whose end (or deadline) ends that read.
func (r *readAhead) Close() error {
	var err error
	r.once.Do(func() {
		close(r.quit)
		<-r.done
		err = r.closer.Close()
	})
	return err
}

// storedLayers wraps an image whose layers' Compressed streams are read as
// they are stored (a registry's blobs, an OCI layout, a tarball of
// compressed layers), so that Uncompressed uses Decompress instead of
// go-containerregistry's single-goroutine gzip reader.
type storedLayers struct{ v1.Image }

// StoredLayers returns img with faster Uncompressed layer streams. Use it only
// when the layers' Compressed method reads stored bytes; for an image whose
// layers are stored uncompressed (a docker save tarball), Compressed would
// compress them first.
func StoredLayers(img v1.Image) v1.Image { return storedLayers{img} }

func (s storedLayers) Layers() ([]v1.Layer, error) {
	ls, err := s.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = storedLayer{l}
	}
	return out, nil
}

type storedLayer struct{ v1.Layer }

func (l storedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	return Decompress(rc)
}
