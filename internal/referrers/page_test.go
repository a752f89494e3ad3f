package referrers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// get serves one referrers request for team/app's subject and decodes it.
func get(t *testing.T, h *Handler, subject digest.Digest, query string) (v1.Index, http.Header, int) {
	t.Helper()
	target := "/v2/team/app/referrers/" + subject.String()
	if query != "" {
		target += "?" + query
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil), "team/app", subject)
	var idx v1.Index
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil {
			t.Fatal(err)
		}
	}
	return idx, rec.Header(), rec.Body.Len()
}

// completeIndex returns an index over an in-memory driver, complete for
// team/app (no rebuild from manifests).
func completeIndex(t *testing.T) (*inmemory.Driver, *Index) {
	t.Helper()
	drv := inmemory.New()
	x, err := NewIndex(drv)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.MarkComplete(context.Background(), "team/app"); err != nil {
		t.Fatal(err)
	}
	return drv, x
}

// handlerOver serves the referrers API from x alone.
func handlerOver(t *testing.T, x *Index) *Handler {
	t.Helper()
	h, err := NewHandler(x, struct{ repositories }{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

var nextRE = regexp.MustCompile(`^<(/v2/team/app/referrers/[^?]+)\?([^>]+)>; rel="next"$`)

// TestPagination: a long referrers list is served in pages linked by the
// Link header; following them yields every referrer once, in order, with
// the artifactType filter kept.
func TestPagination(t *testing.T) {
	ctx := context.Background()
	_, x := completeIndex(t)
	subject := digest.FromString("subject")
	const n = 2500
	for i := range n {
		typ := "application/x.sig"
		if i%2 == 1 {
			typ = "application/x.sbom"
		}
		d := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString(fmt.Sprint(i)), Size: 10, ArtifactType: typ}
		if err := x.Add(ctx, "team/app", subject, d); err != nil {
			t.Fatal(err)
		}
	}
	h := handlerOver(t, x)
	for _, tc := range []struct {
		query string
		want  int
	}{{"", n}, {"artifactType=application%2Fx.sbom", n / 2}} {
		seen := map[digest.Digest]bool{}
		var prev digest.Digest
		query, pages := tc.query, 0
		for {
			idx, hdr, _ := get(t, h, subject, query)
			pages++
			if len(idx.Manifests) > maxPageDescriptors {
				t.Fatalf("a page of %d descriptors", len(idx.Manifests))
			}
			for _, m := range idx.Manifests {
				if seen[m.Digest] || m.Digest <= prev {
					t.Fatalf("%s repeated or out of order", m.Digest)
				}
				if tc.query != "" && m.ArtifactType != "application/x.sbom" {
					t.Fatalf("filter lost on page %d: %s", pages, m.ArtifactType)
				}
				seen[m.Digest], prev = true, m.Digest
			}
			link := hdr.Get("Link")
			if link == "" {
				break
			}
			mm := nextRE.FindStringSubmatch(link)
			if mm == nil {
				t.Fatalf("Link %q", link)
			}
			query = mm[2]
		}
		if len(seen) != tc.want || pages < 2 {
			t.Errorf("query %q: %d referrers in %d pages, want %d in several", tc.query, len(seen), pages, tc.want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/team/app/referrers/"+subject.String()+"?last=nonsense", nil), "team/app", subject)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "DIGEST_INVALID") {
		t.Errorf("bad last: %d %s", rec.Code, rec.Body)
	}
}

// TestAnnotationsBounded: referrers with megabytes of annotations, whether
// indexed now or stored before the bound, are served with their
// annotations cut to MaxAnnotationBytes, short ones kept.
func TestAnnotationsBounded(t *testing.T) {
	ctx := context.Background()
	drv, x := completeIndex(t)
	subject := digest.FromString("subject")
	huge := strings.Repeat("x", 4<<20)
	for i := range 8 {
		manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"artifactType":"application/x.junk",`+
			`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},`+
			`"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":1},`+
			`"annotations":{"a.short":"kept","z.big":%q,"n":"%d"}}`, v1.MediaTypeImageManifest, v1.MediaTypeImageManifest, subject, huge, i)
		got, desc, err := Describe(v1.MediaTypeImageManifest, manifest)
		if err != nil || got != subject {
			t.Fatalf("Describe: %v %v", got, err)
		}
		if i < 4 {
			if err := x.Add(ctx, "team/app", subject, desc); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// An entry written before the bound, annotations in full.
		desc.Annotations = map[string]string{"a.short": "kept", "z.big": huge}
		raw, _ := json.Marshal(desc)
		if err := drv.PutContent(ctx, entryPath("team/app", subject, desc.Digest), raw); err != nil {
			t.Fatal(err)
		}
	}
	h := handlerOver(t, x)
	idx, _, size := get(t, h, subject, "")
	if len(idx.Manifests) != 8 {
		t.Fatalf("%d referrers, want 8", len(idx.Manifests))
	}
	if size > 8*(MaxAnnotationBytes+1024) {
		t.Errorf("response of %d bytes", size)
	}
	for _, m := range idx.Manifests {
		if m.Annotations["a.short"] != "kept" || m.Annotations["z.big"] != "" {
			t.Errorf("annotations of %s: %d keys, short %q, big %d bytes", m.Digest, len(m.Annotations), m.Annotations["a.short"], len(m.Annotations["z.big"]))
		}
	}
}
