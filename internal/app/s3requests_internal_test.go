package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// requestLog records, in order, the registry requests a client sends
// ("== METHOD /v2/…") and the S3 requests the registry sends meanwhile
// ("METHOD key", a listing as "LIST prefix").
type requestLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *requestLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

// take returns the lines recorded since the last take.
func (l *requestLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// s3Recorder is a reverse proxy in front of MinIO that logs each request.
func s3Recorder(t *testing.T, srv *miniotest.Server, log *requestLog) string {
	t.Helper()
	proxy := srv.ReverseProxy(t)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		proxy.ServeHTTP(rec, r)
		line := miniotest.Describe(r)
		if rec.status == http.StatusNotFound {
			line += " (404)"
		}
		log.add(line)
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

// clientRecorder marks each registry request of a client in the log.
type clientRecorder struct {
	next http.RoundTripper
	log  *requestLog
}

func (c clientRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path != "/v2/" {
		c.log.add("== " + r.Method + " " + r.URL.Path)
	}
	return c.next.RoundTrip(r)
}

// TestSmallImagePushRequests lists the S3 requests of one small image's
// push by tag through the whole registry, as crane's library sends it one
// request at a time: for the config and the layer, HEAD, POST, PATCH, PUT;
// then the manifest PUT by tag. The comments say why each request is
// needed; the test fails when one comes back or a new one appears.
func TestSmallImagePushRequests(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	log := &requestLog{}
	cfg := s3Config(t, srv)
	cfg.Storage.S3.Endpoint = s3Recorder(t, srv, log)
	a, host := servedApp(t, cfg, slog.New(slog.DiscardHandler))
	// As serve does before it serves: the markers read whether a
	// collection runs (none: nothing is marked).
	a.marks.Start(t.Context())

	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	log.take()
	tr := clientRecorder{next: http.DefaultTransport, log: log}
	if err := remote.Write(ref, img, remote.WithTransport(tr), remote.WithJobs(1)); err != nil {
		t.Fatalf("push: %v", err)
	}
	got := shorten(t, img, log.take())
	blob := func(name, upload string) []string {
		up := "repositories/team/app/_uploads/" + upload + "/"
		return []string{
			// Does the repository have the blob? Its link, once: the
			// front handler answers the 404 itself.
			"== HEAD /v2/team/app/blobs/sha256:" + name,
			"GET repositories/team/app/_layers/sha256/" + name + "/link (404)",
			// The upload's start: how every replica knows the upload.
			"== POST /v2/team/app/blobs/uploads/",
			"PUT " + up + "startedat",
			// The upload; the chunk in the pending tail, with the
			// hash state after it and the upload's start. Not read:
			// the tail of an upload the client says is empty. Not
			// stored: the hash state's own object, the upload's sign
			// of activity for garbage collection, while its startedat
			// is a moment old.
			"== PATCH /v2/team/app/blobs/uploads/" + upload,
			"GET " + up + "startedat",
			"PUT ~pending/" + up + "data",
			// The tail: the upload, its start, bytes and hash state.
			// Is the blob stored already (then it is not put again)?
			// The blob, put from memory; the repository's link; the
			// upload's directory with its tail, by name.
			"== PUT /v2/team/app/blobs/uploads/" + upload,
			"GET ~pending/" + up + "data",
			"HEAD blobs/sha256/" + name + "/data (404)",
			"PUT blobs/sha256/" + name + "/data",
			"PUT repositories/team/app/_layers/sha256/" + name + "/link",
			"DELETE-MULTI ",
		}
	}
	want := slices.Concat(
		[]string{
			// Is the tag there (the client pushes what is missing)?
			"== HEAD /v2/team/app/manifests/v1",
			"GET repositories/team/app/_manifests/tags/v1/current/link (404)",
		},
		blob("<layer>", "<upload1>"),
		blob("<config>", "<upload2>"),
		[]string{
			"== PUT /v2/team/app/manifests/v1",
			// distribution checks each blob the manifest names: the
			// repository's link (another replica may have stored it),
			// and the blob's data.
			"GET repositories/team/app/_layers/sha256/<config>/link",
			"HEAD blobs/sha256/<config>/data",
			"GET repositories/team/app/_layers/sha256/<layer>/link",
			"HEAD blobs/sha256/<layer>/data",
			// Is the manifest stored already? Then the manifest, its
			// revision link, the tag's index entry and the tag.
			"HEAD blobs/sha256/<manifest>/data (404)",
			"PUT blobs/sha256/<manifest>/data",
			"PUT repositories/team/app/_manifests/revisions/sha256/<manifest>/link",
			"PUT repositories/team/app/_manifests/tags/v1/index/sha256/<manifest>/link",
			"PUT repositories/team/app/_manifests/tags/v1/current/link",
		},
	)
	if !slices.Equal(got, want) {
		t.Errorf("requests of one small image's push:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// shorten names the image's digests and the upload IDs in lines, and drops
// the layout's root.
func shorten(t *testing.T, img v1.Image, lines []string) []string {
	t.Helper()
	names := map[string]string{}
	md, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	names[md.Hex] = "<manifest>"
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	names[cd.Hex] = "<config>"
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		names[d.Hex] = "<layer>"
	}
	uuid := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	ids := map[string]string{}
	out := make([]string, len(lines))
	for i, l := range lines {
		l = strings.ReplaceAll(l, "docker/registry/v2/", "")
		for hex, n := range names {
			l = strings.ReplaceAll(l, hex[:2]+"/"+hex, n)
			l = strings.ReplaceAll(l, hex, n)
		}
		l = uuid.ReplaceAllStringFunc(l, func(id string) string {
			if ids[id] == "" {
				ids[id] = fmt.Sprintf("<upload%d>", len(ids)+1)
			}
			return ids[id]
		})
		out[i] = l
	}
	return out
}
