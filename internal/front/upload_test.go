package front

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// chunkRecorder records the writes it takes, failing from the write
// numbered fail (1 is the first; 0: never).
type chunkRecorder struct {
	bytes.Buffer
	sizes []int
	fail  int
}

var errDisk = errors.New("disk failed")

func (c *chunkRecorder) Write(p []byte) (int, error) {
	if c.fail > 0 && len(c.sizes)+1 >= c.fail {
		return 0, errDisk
	}
	c.sizes = append(c.sizes, len(p))
	return c.Buffer.Write(p)
}

// TestUploadBodyWriteTo: an upload's body reaches the core's copy in
// chunks of blobCopySize, whatever the sizes of the connection's reads,
// with every byte once and in order; a read error (a client that went
// away before its Content-Length: io.ErrUnexpectedEOF) or a write error
// comes back as io.Copy reports it, after the bytes before it.
func TestUploadBodyWriteTo(t *testing.T) {
	t.Parallel()
	data := make([]byte, 2*blobCopySize+1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	errRead := io.ErrUnexpectedEOF
	tests := []struct {
		name      string
		body      io.Reader
		fail      int
		want      []byte
		wantSizes []int
		wantErr   error
	}{
		{"whole body", bytes.NewReader(data), 0, data, []int{blobCopySize, blobCopySize, 1000}, nil},
		{"small reads", iotest.HalfReader(bytes.NewReader(data)), 0, data, []int{blobCopySize, blobCopySize, 1000}, nil},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(data[:5000])), 0, data[:5000], []int{5000}, nil},
		{"data with EOF", iotest.DataErrReader(bytes.NewReader(data[:blobCopySize])), 0, data[:blobCopySize], []int{blobCopySize}, nil},
		{"empty", bytes.NewReader(nil), 0, nil, nil, nil},
		{"client gone", io.MultiReader(bytes.NewReader(data[:blobCopySize+10]), iotest.ErrReader(errRead)), 0,
			data[:blobCopySize+10], []int{blobCopySize, 10}, errRead},
		{"write fails", bytes.NewReader(data), 2, data[:blobCopySize], []int{blobCopySize}, errDisk},
	}
	bufs := &sync.Pool{New: func() any { return new([blobCopySize]byte) }}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPatch, "/v2/team/app/blobs/uploads/u1", tt.body)
			r = withUploadBody(r, bufs)
			dst := &chunkRecorder{fail: tt.fail}
			n, err := io.Copy(dst, r.Body)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if n != int64(len(tt.want)) || !bytes.Equal(dst.Bytes(), tt.want) {
				t.Errorf("copied %d bytes (%d recorded), want %d, the body's first", n, dst.Len(), len(tt.want))
			}
			if !slices.Equal(dst.sizes, tt.wantSizes) {
				t.Errorf("writes of %v bytes, want %v", dst.sizes, tt.wantSizes)
			}
		})
	}
}

// TestWithUploadBody: a request without a body keeps it as it is; the
// original request is not changed.
func TestWithUploadBody(t *testing.T) {
	t.Parallel()
	bufs := &sync.Pool{New: func() any { return new([blobCopySize]byte) }}
	r := httptest.NewRequest(http.MethodPatch, "/v2/team/app/blobs/uploads/u1", nil)
	if got := withUploadBody(r, bufs); got != r || got.Body != http.NoBody {
		t.Errorf("request without a body: got a new one, or body %T", got.Body)
	}
	r = httptest.NewRequest(http.MethodPatch, "/v2/team/app/blobs/uploads/u1", bytes.NewReader([]byte("abc")))
	orig := r.Body
	got := withUploadBody(r, bufs)
	if _, ok := got.Body.(io.WriterTo); !ok || r.Body != orig {
		t.Errorf("body %T without WriteTo, or the original request changed", got.Body)
	}
}

// TestUploadState reads the upload ID and offset from upload states packed
// as distribution packs them, and nothing from anything else.
func TestUploadState(t *testing.T) {
	t.Parallel()
	pack := func(state any) string {
		p, err := json.Marshal(state)
		if err != nil {
			t.Fatal(err)
		}
		mac := hmac.New(sha256.New, []byte("secret"))
		mac.Write(p)
		return base64.URLEncoding.EncodeToString(append(mac.Sum(nil), p...))
	}
	type state struct {
		Name      string
		UUID      string
		Offset    int64
		StartedAt time.Time
	}
	tests := []struct {
		name, token string
		id          string
		offset      int64
		ok          bool
	}{
		{name: "empty upload", token: pack(state{Name: "r", UUID: "u-1", StartedAt: time.Now()}), id: "u-1", ok: true},
		{name: "after a chunk", token: pack(state{Name: "r", UUID: "u-1", Offset: 13}), id: "u-1", offset: 13, ok: true},
		{name: "no UUID", token: pack(state{Name: "r"})},
		{name: "negative offset", token: pack(state{UUID: "u-1", Offset: -1})},
		{name: "not JSON", token: base64.URLEncoding.EncodeToString(make([]byte, 40))},
		{name: "too short", token: base64.URLEncoding.EncodeToString(make([]byte, 32))},
		{name: "not base64", token: "!!"},
		{name: "none"},
	}
	for _, tt := range tests {
		id, offset, ok := uploadState(tt.token)
		if id != tt.id || offset != tt.offset || ok != tt.ok {
			t.Errorf("%s: uploadState = %q, %d, %v; want %q, %d, %v", tt.name, id, offset, ok, tt.id, tt.offset, tt.ok)
		}
	}
}
