package scan

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

func zstdBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

func TestDecompress(t *testing.T) {
	t.Parallel()
	// Incompressible content over several read-ahead buffers, so chunk hand-over is exercised.
	plain := make([]byte, 3*readAheadSize+12345)
	if _, err := rand.Read(plain); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		blob []byte
	}{
		{"gzip", gzipBytes(t, plain)},
		{"zstd", zstdBytes(t, plain)},
		{"plain", plain},
		{"empty", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &closeCounter{Reader: bytes.NewReader(tt.blob)}
			rc, err := Decompress(src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(iotestOneByteThenBig(rc))
			if err != nil {
				t.Fatal(err)
			}
			want := plain
			if tt.blob == nil {
				want = nil
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes, want %d identical bytes", len(got), len(want))
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			if src.closed != 1 {
				t.Fatalf("underlying blob closed %d times, want once", src.closed)
			}
		})
	}
}

// iotestOneByteThenBig reads with a mix of tiny and large reads, as the tar reader does.
func iotestOneByteThenBig(r io.Reader) io.Reader {
	return &mixedReader{r: r}
}

type mixedReader struct {
	r io.Reader
	n int
}

func (m *mixedReader) Read(p []byte) (int, error) {
	m.n++
	if m.n%2 == 1 && len(p) > 1 {
		p = p[:1]
	}
	return m.r.Read(p)
}

func TestDecompressCorrupt(t *testing.T) {
	t.Parallel()
	blob := gzipBytes(t, bytes.Repeat([]byte("layer "), 1<<18))
	truncated := blob[:len(blob)/2]
	rc, err := Decompress(io.NopCloser(bytes.NewReader(truncated)))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated gzip: err = %v, want unexpected EOF", err)
	}
	// A gzip header followed by garbage fails at once or on the first read.
	bad := append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, bytes.Repeat([]byte{0xff}, 100)...)
	if rc, err := Decompress(io.NopCloser(bytes.NewReader(bad))); err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			t.Fatal("garbage after a gzip header decoded without error")
		}
	}
}

// TestDecompressCloseEarly closes a stream before reading it to the end: the read-ahead
// goroutine stops rather than leaking.
func TestDecompressCloseEarly(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 20 {
		blob := gzipBytes(t, bytes.Repeat([]byte("0123456789"), 1<<20))
		rc, err := Decompress(io.NopCloser(bytes.NewReader(blob)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after closing 20 streams early, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noDiffIDLayer fails if anything asks the layer for a DiffID it would have to compute.
type noDiffIDLayer struct{ v1.Layer }

func (noDiffIDLayer) DiffID() (v1.Hash, error) {
	return v1.Hash{}, errors.New("DiffID computed from the layer; the config has it")
}

type noDiffIDImage struct{ v1.Image }

func (i noDiffIDImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	for j := range ls {
		ls[j] = noDiffIDLayer{ls[j]}
	}
	return ls, err
}

// TestIndexUsesConfigDiffIDs: a layer is read once; its DiffID comes from the image config
// and is checked against the content as it is read.
func TestIndexUsesConfigDiffIDs(t *testing.T) {
	t.Parallel()
	img := imageOf(t, debianLayers(t)...)
	inv, err := Index(t.Context(), noDiffIDImage{img}, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Packages) == 0 {
		t.Fatal("no packages indexed")
	}
	ix := NewIndexer(IndexOptions{})
	if _, err := ix.Index(t.Context(), noDiffIDImage{img}); err != nil {
		t.Fatal(err)
	}
}

// forgedConfigImage claims DiffIDs for its layers that are not theirs.
type forgedConfigImage struct {
	layersImage
	diffIDs []v1.Hash
}

func (i forgedConfigImage) ConfigFile() (*v1.ConfigFile, error) {
	cf := &v1.ConfigFile{}
	cf.RootFS.DiffIDs = i.diffIDs
	return cf, nil
}

// TestCacheIgnoresClaimedDiffID: an image whose config claims the DiffID of a layer the
// cache already knows does not get that layer's inventory: its own layer is read and fails
// the DiffID check, with and without another scan of it in flight.
func TestCacheIgnoresClaimedDiffID(t *testing.T) {
	t.Parallel()
	clean := layerOf(t, gzipBytes(t, tarBytes(t, file("etc/motd", "hello"))))
	vulnerable := layerOf(t, gzipBytes(t, tarBytes(t, file("app/node_modules/lodash/package.json", `{"name":"lodash","version":"4.17.15"}`))))
	cleanID, err := clean.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	cache := &countingCache{}
	ix := NewIndexer(IndexOptions{Cache: cache})
	if _, err := ix.Index(t.Context(), layersImage{layers: []v1.Layer{clean}}); err != nil {
		t.Fatal(err)
	}
	forged := forgedConfigImage{layersImage{layers: []v1.Layer{vulnerable}}, []v1.Hash{cleanID}}
	inv, err := ix.Index(t.Context(), forged)
	if !errors.Is(err, ErrDiffIDMismatch) {
		t.Fatalf("image claiming a cached layer's DiffID: inventory %+v, err %v; want ErrDiffIDMismatch", inv, err)
	}
	if _, err := Index(t.Context(), forged, IndexOptions{Cache: cache}); !errors.Is(err, ErrDiffIDMismatch) {
		t.Fatalf("Index with the cache: err %v, want ErrDiffIDMismatch", err)
	}
}

type stuckReader struct{}

func (stuckReader) Read([]byte) (int, error) { return 0, nil }

// TestDecompressNoHang: a Read after Close returns an error instead of blocking, and a source
// that never makes progress fails instead of spinning.
func TestDecompressNoHang(t *testing.T) {
	t.Parallel()
	blob := gzipBytes(t, bytes.Repeat([]byte("0123456789"), 1<<20))
	rc, err := Decompress(io.NopCloser(bytes.NewReader(blob)))
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(rc)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read after Close blocked")
	}
	rc, err = Decompress(io.NopCloser(io.MultiReader(bytes.NewReader([]byte("plain tar")), stuckReader{})))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("source stuck at (0, nil): err %v, want io.ErrNoProgress", err)
	}
}

type panickingReader struct{ first bool }

func (p *panickingReader) Read(b []byte) (int, error) {
	if !p.first {
		p.first = true
		return copy(b, "plain tar"), nil
	}
	panic("decoder bug")
}

// TestDecompressPanic: a panic while decompressing fails the read instead of the process.
func TestDecompressPanic(t *testing.T) {
	t.Parallel()
	rc, err := Decompress(io.NopCloser(&panickingReader{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, errDecompressPanic) {
		t.Fatalf("err = %v, want errDecompressPanic", err)
	}
}

type panickingLayer struct{ v1.Layer }

func (panickingLayer) Uncompressed() (io.ReadCloser, error) { panic("reader bug") }

// TestIndexerPanicReleasesLayer: a read of a layer that panics does not leave the layer's
// in-flight entry behind for the next caller to wait on forever.
func TestIndexerPanicReleasesLayer(t *testing.T) {
	t.Parallel()
	l := panickingLayer{layerOf(t, gzipBytes(t, tarBytes(t, file("etc/motd", "hi"))))}
	ix := NewIndexer(IndexOptions{Cache: &countingCache{}}) // calls share reads with a cache
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic was swallowed")
			}
		}()
		_, _ = ix.IndexLayer(t.Context(), l)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }()
		_, _ = ix.IndexLayer(t.Context(), l)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("second read of the layer waits on the panicked one")
	}
}

// TestDecompressSmallLayerBuffers: a layer smaller than one read-ahead buffer costs one
// buffer, not readAheadBuffers of them.
func TestDecompressSmallLayerBuffers(t *testing.T) {
	// Not parallel: it reads the process's allocation counter.
	data := bytes.Repeat([]byte("Package: a\n\n"), 300)
	least := uint64(1 << 62)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rc, err := Decompress(io.NopCloser(bytes.NewReader(data)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
		}
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	if want := uint64(2 * readAheadSize); least >= want {
		t.Errorf("decompressing a %d-byte layer allocated %d bytes, want under %d (one read-ahead buffer and change)", len(data), least, want)
	}
}
