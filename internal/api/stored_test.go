package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/trust"
)

// fakeStored holds repositories of tags; a tag's digest is its name's.
type fakeStored map[string][]string

func tagDigest(repo, tag string) digest.Digest { return digest.FromString(repo + ":" + tag) }

func (f fakeStored) Repositories(_ context.Context, last string, n int) ([]string, error) {
	var names []string
	for name := range f {
		if name > last {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names[:min(n, len(names))], nil
}

func (f fakeStored) Tags(_ context.Context, repo string) ([]string, error) {
	tags, ok := f[repo]
	if !ok {
		return nil, ErrRepositoryUnknown
	}
	return tags, nil
}

func (f fakeStored) Tag(_ context.Context, repo, tag string) (StoredTag, error) {
	return StoredTag{Digest: tagDigest(repo, tag), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 1234,
		Pushed: time.Unix(1780000000, 0)}, nil
}

// fakeScans: a tag named crit-* has a critical finding, unrated-* an
// unrated one, anything else none.
type fakeScans struct{ tags map[digest.Digest]string }

func (f fakeScans) Summary(_ context.Context, _ string, d digest.Digest, _ string, _ []byte) *scan.Summary {
	s := &scan.Summary{Status: scan.StatusScanned, Counts: &scan.SeverityCounts{}, WorstSeverity: "none"}
	switch tag := f.tags[d]; {
	case strings.HasPrefix(tag, "crit"):
		s.Counts.Critical, s.WorstSeverity = 1, "critical"
	case strings.HasPrefix(tag, "unrated"):
		s.Counts.Unknown, s.WorstSeverity = 10, "unknown"
		s.Policy = &scan.GateSummary{Name: "prod", Mode: "audit", Violations: 10, UnknownSeverity: "critical"}
	}
	s.Findings = []scan.SummaryFinding{{ID: "CVE-1"}}
	return s
}

// signedVerdicts trusts the tags named signed-*.
type signedVerdicts struct{ tags map[digest.Digest]string }

func (signedVerdicts) Applies(string) bool { return true }

func (v signedVerdicts) Verdict(_ context.Context, repo string, d digest.Digest) (trust.Verdict, error) {
	ok := strings.Contains(v.tags[d], "signed")
	return trust.Verdict{Repository: repo, Digest: d, Policy: "prod", Mode: "audit", Signed: ok, Trusted: ok}, nil
}

func TestTagListing(t *testing.T) {
	t.Parallel()
	stored := fakeStored{"team/app": {"crit-1", "crit-signed", "plain", "signed", "unrated"}, "team/db": {"v1"}, "other": {}}
	names := map[digest.Digest]string{}
	for repo, tags := range stored {
		for _, tag := range tags {
			names[tagDigest(repo, tag)] = tag
		}
	}
	h, err := New(Options{Auth: &fakeAuth{}, Stored: stored, Scans: fakeScans{names}, Verdicts: signedVerdicts{names},
		Withheld: func(_ context.Context, _ string, d digest.Digest, login string) error {
			if login == "" && !strings.Contains(names[d], "signed") {
				return fmt.Errorf("withheld")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		want     []string
		wantLink string
	}{
		{"/api/v1/repositories/team/app/tags", []string{"crit-1", "crit-signed", "plain", "signed", "unrated"}, ""},
		{"/api/v1/repositories/team/app/tags?n=2", []string{"crit-1", "crit-signed"}, "</api/v1/repositories/team/app/tags?last=crit-signed&n=2>; rel=\"next\""},
		{"/api/v1/repositories/team/app/tags?n=2&last=crit-signed", []string{"plain", "signed"}, "</api/v1/repositories/team/app/tags?last=signed&n=2>; rel=\"next\""},
		{"/api/v1/repositories/team/app/tags?n=2&last=signed", []string{"unrated"}, ""},
		{"/api/v1/repositories/team/app/tags?vulnerable=critical", []string{"crit-1", "crit-signed", "unrated"}, ""},
		{"/api/v1/repositories/team/app/tags?vulnerable=high&unsigned=true", []string{"crit-1", "unrated"}, ""},
		{"/api/v1/repositories/team/app/tags?unsigned=true&n=1", []string{"crit-1"}, "</api/v1/repositories/team/app/tags?last=crit-1&n=1&unsigned=true>; rel=\"next\""},
		{"/api/v1/repositories/other/tags", []string{}, ""},
	}
	for _, tt := range tests {
		rec := call(h, http.MethodGet, tt.path, "")
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d %s", tt.path, rec.Code, rec.Body)
			continue
		}
		var out struct {
			Tags []struct {
				Tag       string
				Digest    digest.Digest
				Size      int64
				Pushed    time.Time
				Withheld  bool
				Signature struct{ Status string }
				Scan      struct {
					Status   string
					Findings []any
				}
			}
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		got := []string{}
		for _, tg := range out.Tags {
			got = append(got, tg.Tag)
			signed := strings.Contains(tg.Tag, "signed")
			if tg.Digest != tagDigest("team/app", tg.Tag) || tg.Size != 1234 || tg.Pushed.IsZero() || tg.Scan.Status != "scanned" ||
				tg.Scan.Findings != nil || (tg.Signature.Status == "trusted") != signed || tg.Withheld == signed {
				t.Errorf("%s: tag %+v", tt.path, tg)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.path, diff)
		}
		if link := rec.Header().Get("Link"); link != tt.wantLink {
			t.Errorf("%s: Link %q, want %q", tt.path, link, tt.wantLink)
		}
	}

	rec := call(h, http.MethodGet, "/api/v1/repositories?n=2", "")
	if rec.Body.String() != `{"repositories":[{"name":"other"},{"name":"team/app"}]}`+"\n" ||
		rec.Header().Get("Link") != `</api/v1/repositories?last=team%2Fapp&n=2>; rel="next"` {
		t.Errorf("repositories: %s %q", rec.Body, rec.Header().Get("Link"))
	}
	for path, want := range map[string]int{
		"/api/v1/repositories/nope/tags":                   404,
		"/api/v1/repositories/team/app/tags?vulnerable=x":  400,
		"/api/v1/repositories/team/app/tags?n=0":           400,
		"/api/v1/repositories/team/app/tags?signed=true":   400,
		"/api/v1/repositories?unsigned=true":               400,
		"/api/v1/repositories/team/app/tags?unsigned=nope": 400,
	} {
		if rec := call(h, http.MethodGet, path, ""); rec.Code != want {
			t.Errorf("%s: %d %s, want %d", path, rec.Code, rec.Body, want)
		}
	}
	refused, err := New(Options{Auth: &fakeAuth{err: fmt.Errorf("no")}, Stored: stored})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/repositories", "/api/v1/repositories/team/app/tags"} {
		rec := call(refused, http.MethodGet, path, "")
		if code, msg := decodeError(t, rec.Body.Bytes()); rec.Code != 403 || code != "DENIED" || !strings.Contains(msg, "registry:admin:*") {
			t.Errorf("%s without the admin scope: %d %s", path, rec.Code, rec.Body)
		}
	}
}

// TestAllTags: GET /api/v1/tags walks every repository's tags in order;
// following the Link headers with any page size yields each tag once.
func TestAllTags(t *testing.T) {
	t.Parallel()
	stored := fakeStored{"a/empty": {}, "team/app": {"crit-1", "crit-signed", "plain", "signed", "unrated"}, "team/db": {"v1"}, "zz": {"crit-z"}}
	names := map[digest.Digest]string{}
	for repo, tags := range stored {
		for _, tag := range tags {
			names[tagDigest(repo, tag)] = tag
		}
	}
	h, err := New(Options{Auth: &fakeAuth{}, Stored: stored, Scans: fakeScans{names}, Verdicts: signedVerdicts{names}})
	if err != nil {
		t.Fatal(err)
	}
	walk := func(query string) ([]string, int) { return walkAllTags(t, h, query, nil) }
	all := []string{"team/app:crit-1", "team/app:crit-signed", "team/app:plain", "team/app:signed", "team/app:unrated", "team/db:v1", "zz:crit-z"}
	for _, n := range []string{"", "?n=1", "?n=2", "?n=3", "?n=6", "?n=7"} {
		got, _ := walk(n)
		if diff := cmp.Diff(all, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", n, diff)
		}
	}
	if got, pages := walk("?n=1"); len(got) != 7 || pages < 7 {
		t.Errorf("?n=1: %d tags in %d pages", len(got), pages)
	}
	got, _ := walk("?vulnerable=critical&n=2")
	if diff := cmp.Diff([]string{"team/app:crit-1", "team/app:crit-signed", "team/app:unrated", "zz:crit-z"}, got); diff != "" {
		t.Errorf("vulnerable=critical (-want +got):\n%s", diff)
	}
	got, _ = walk("?unsigned=true&last=team%2Fapp%3Aplain")
	if diff := cmp.Diff([]string{"team/app:unrated", "team/db:v1", "zz:crit-z"}, got); diff != "" {
		t.Errorf("unsigned after team/app:plain (-want +got):\n%s", diff)
	}
	if rec := call(h, http.MethodGet, "/api/v1/tags?last=nocolon", ""); rec.Code != http.StatusBadRequest {
		t.Errorf("a cursor without a tag: %d", rec.Code)
	}
}

// countingStored counts the repositories whose tags are listed.
type countingStored struct {
	fakeStored
	listed int
}

func (c *countingStored) Tags(ctx context.Context, repo string) ([]string, error) {
	c.listed++
	return c.fakeStored.Tags(ctx, repo)
}

// TestAllTagsBoundsRepositories: a page lists the tags of at most
// maxJudged repositories, tags or none: many empty repositories cost
// pages, not one unbounded request.
func TestAllTagsBoundsRepositories(t *testing.T) {
	t.Parallel()
	stored := &countingStored{fakeStored: fakeStored{"zz/app": {"v1"}}}
	for i := range 2*maxJudged + 10 {
		stored.fakeStored[fmt.Sprintf("empty/%05d", i)] = []string{}
	}
	h, err := New(Options{Auth: &fakeAuth{}, Stored: stored})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := walkAllTags(t, h, "", func(page string, call func()) {
		stored.listed = 0
		call()
		if stored.listed > maxJudged {
			t.Errorf("%s: one page listed the tags of %d repositories, want at most %d", page, stored.listed, maxJudged)
		}
	})
	if diff := cmp.Diff([]string{"zz/app:v1"}, got); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
}

// walkAllTags follows the Links of GET /api/v1/tags?query and returns
// every REPOSITORY:TAG listed and the number of pages; around, when set,
// wraps each page's request.
func walkAllTags(t *testing.T, h http.Handler, query string, around func(page string, call func())) ([]string, int) {
	t.Helper()
	if around == nil {
		around = func(_ string, call func()) { call() }
	}
	var got []string
	pages := 0
	for next := "/api/v1/tags" + query; next != ""; pages++ {
		if pages > 20 {
			t.Fatalf("%s: more than 20 pages", query)
		}
		var rec *httptest.ResponseRecorder
		around(next, func() { rec = call(h, http.MethodGet, next, "") })
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", next, rec.Code, rec.Body)
		}
		var out struct {
			Tags []struct{ Repository, Tag string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		for _, tg := range out.Tags {
			got = append(got, tg.Repository+":"+tg.Tag)
		}
		next = ""
		if link := rec.Header().Get("Link"); link != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	return got, pages
}
