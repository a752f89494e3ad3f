package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/trust"
)

// Page sizes of the listings: ?n defaults to defaultPage and is capped at
// maxPage. A filtered listing judges at most maxJudged tags per request,
// and the listing of every tag lists the tags of at most maxJudged
// repositories, each counted as a tag judged: a page may then hold fewer
// than n, with a Link to the next.
const (
	defaultPage = 100
	maxPage     = 1000
	maxJudged   = 1000
)

// allTagsPath lists the tags of every repository.
const allTagsPath = Prefix + "tags"

// ErrRepositoryUnknown is returned by Stored.Tags for a repository that
// does not exist.
var ErrRepositoryUnknown = errors.New("repository unknown")

// StoredTag is a tag as stored: what it points to and when it was set.
type StoredTag struct {
	Digest    digest.Digest
	MediaType string
	// Size is the manifest's length plus the sizes of the descriptors it
	// lists: an image's config and layers, an index's child manifests.
	Size int64
	// Pushed is when the tag was last set.
	Pushed time.Time
	// Manifest is the manifest's content.
	Manifest []byte
}

// Stored reads what the registry stores, for the management API.
type Stored interface {
	// Repositories returns at most n repository names after last, in
	// order.
	Repositories(ctx context.Context, last string, n int) ([]string, error)
	// Tags returns repo's tags in order, or ErrRepositoryUnknown.
	Tags(ctx context.Context, repo string) ([]string, error)
	// Tag returns what repo:tag points to, or an error wrapping
	// trust.ErrNotFound when it is gone.
	Tag(ctx context.Context, repo, tag string) (StoredTag, error)
}

// Scans summarizes images' vulnerability scans without scanning.
type Scans interface {
	Summary(ctx context.Context, repo string, d digest.Digest, mediaType string, manifest []byte) *scan.Summary
}

// tagState is one tag of a listing.
type tagState struct {
	Repository string          `json:"repository"`
	Tag        string          `json:"tag"`
	Digest     digest.Digest   `json:"digest"`
	MediaType  string          `json:"mediaType"`
	Size       int64           `json:"size"`
	Pushed     time.Time       `json:"pushed,omitzero"`
	Signature  *signatureState `json:"signature"`
	Scan       *scan.Summary   `json:"scan"`
	// Withheld is true when readers who may not push are refused the
	// content (quarantine, or no longer trusted in enforce): the listing
	// says so, the content stays unreadable to them.
	Withheld bool `json:"withheld"`
}

// signatureState is a tag's trust verdict in brief.
type signatureState struct {
	// Status is trusted, untrusted, no-policy (no trust policy applies to
	// the repository: nothing is verified) or error.
	Status  string   `json:"status"`
	Policy  string   `json:"policy,omitempty"`
	Mode    string   `json:"mode,omitempty"`
	Signed  bool     `json:"signed"`
	Signers []string `json:"signers,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// listing is a parsed listing request.
type listing struct {
	n    int
	last string
	// vulnerable keeps images with a finding at or above the level.
	vulnerable osv.Level
	// unsigned keeps tags without a trusted signature.
	unsigned bool
}

func parseListing(q url.Values) (listing, error) {
	l := listing{n: defaultPage, last: q.Get("last")}
	for k := range q {
		if !slices.Contains([]string{"n", "last", "vulnerable", "unsigned"}, k) {
			return l, fmt.Errorf("unknown parameter %s (want n, last, vulnerable, unsigned)", quoteShort(k))
		}
	}
	if s := q.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return l, errors.New("n must be a positive number")
		}
		l.n = min(n, maxPage)
	}
	if s := q.Get("vulnerable"); s != "" {
		lv, ok := osv.ParseLevel(s)
		if !ok || lv == osv.Unknown {
			return l, errors.New("vulnerable must be low, medium, high or critical")
		}
		l.vulnerable = lv
	}
	if s := q.Get("unsigned"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return l, errors.New("unsigned must be true or false")
		}
		l.unsigned = b
	}
	return l, nil
}

// serveRepositories answers GET /api/v1/repositories?n=&last= with
// {"repositories": [{"name": ...}]}, in order, and a Link to the next page.
func (h *Handler) serveRepositories(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.adminScope(w, r, "repository listings"); !ok {
		return
	}
	l, err := parseListing(r.URL.Query())
	if err == nil && (l.vulnerable != "" || l.unsigned) {
		err = errors.New("vulnerable and unsigned filter tags: GET /api/v1/repositories/<name>/tags")
	}
	if err != nil {
		h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", err.Error()))
		return
	}
	type repo struct {
		Name string `json:"name"`
	}
	out := []repo{}
	if h.stored != nil {
		names, err := h.stored.Repositories(r.Context(), l.last, l.n)
		if err != nil {
			h.writeError(w, r, Internal("could not list the repositories", err))
			return
		}
		for _, n := range names {
			out = append(out, repo{Name: n})
		}
		if len(names) == l.n {
			setNext(w, r, names[len(names)-1])
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"repositories": out})
}

// serveTags answers GET /api/v1/repositories/<name>/tags with the tags of
// the repository in order, each with its digest, media type, size, push
// time, signature verdict, scan summary and whether it is withheld;
// filtered by ?vulnerable=LEVEL and ?unsigned=true, paginated by ?n and
// ?last with a Link to the next page.
func (h *Handler) serveTags(w http.ResponseWriter, r *http.Request, repo string) {
	if _, ok := h.adminScope(w, r, "tag listings"); !ok {
		return
	}
	l, err := parseListing(r.URL.Query())
	if err != nil {
		h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", err.Error()))
		return
	}
	if h.stored == nil {
		h.writeError(w, r, errcode.ErrorCodeNameUnknown.WithMessage("repository "+repo+" is not known"))
		return
	}
	ctx := r.Context()
	tags, err := h.stored.Tags(ctx, repo)
	if errors.Is(err, ErrRepositoryUnknown) {
		h.writeError(w, r, errcode.ErrorCodeNameUnknown.WithMessage("repository "+repo+" is not known"))
		return
	}
	if err != nil {
		h.writeError(w, r, Internal("could not list the repository's tags", err))
		return
	}
	out, budget := []tagState{}, maxJudged
	last, done, err := h.judgeTags(ctx, repo, tags, l.last, l, &out, &budget)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if !done {
		setNext(w, r, last)
	}
	writeJSON(w, http.StatusOK, map[string]any{"repository": repo, "tags": out})
}

// serveAllTags answers GET /api/v1/tags: serveTags across every
// repository, in the order of the repositories and then of their tags;
// last is REPOSITORY:TAG.
func (h *Handler) serveAllTags(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.adminScope(w, r, "tag listings"); !ok {
		return
	}
	l, err := parseListing(r.URL.Query())
	var repo, after string
	if err == nil && l.last != "" {
		var ok bool
		if repo, after, ok = strings.Cut(l.last, ":"); !ok || !pauth.ValidRepository(repo) {
			err = errors.New("last must be REPOSITORY:TAG, as the Link header gives it")
		}
	}
	if err != nil {
		h.writeError(w, r, Status(http.StatusBadRequest, "INVALID_REQUEST", err.Error()))
		return
	}
	// The page resumes in the cursor's repository, after its tag ("" from
	// the first tag), and goes on with the repositories after it.
	ctx := r.Context()
	out, budget := []tagState{}, maxJudged
	var queue []string
	if repo != "" {
		queue = []string{repo}
	}
	listed := repo
	for h.stored != nil {
		if len(queue) == 0 {
			if queue, err = h.stored.Repositories(ctx, listed, defaultPage); err != nil {
				h.writeError(w, r, Internal("could not list the repositories", err))
				return
			}
			if len(queue) == 0 {
				break // every repository judged
			}
			listed = queue[len(queue)-1]
		}
		repo, queue = queue[0], queue[1:]
		if len(out) == l.n || budget == 0 {
			setNext(w, r, repo+":")
			break
		}
		budget--
		tags, err := h.stored.Tags(ctx, repo)
		if errors.Is(err, ErrRepositoryUnknown) {
			after = ""
			continue // deleted meanwhile
		}
		if err != nil {
			h.writeError(w, r, Internal("could not list the tags of "+repo, err))
			return
		}
		last, done, err := h.judgeTags(ctx, repo, tags, after, l, &out, &budget)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		if !done {
			setNext(w, r, repo+":"+last)
			break
		}
		after = ""
	}
	writeJSON(w, http.StatusOK, map[string]any{"tags": out})
}

// judgeTags appends to out the tags of repo (in order) after the tag
// after that pass l's filters, until out holds l.n tags or budget tags
// were judged. It returns the last tag judged (after when none was), and
// done true when repo has no tag left to judge.
func (h *Handler) judgeTags(ctx context.Context, repo string, tags []string, after string, l listing, out *[]tagState, budget *int) (string, bool, error) {
	start, _ := slices.BinarySearch(tags, after)
	if after != "" && start < len(tags) && tags[start] == after {
		start++
	}
	last := after
	for _, tag := range tags[start:] {
		if len(*out) == l.n || *budget == 0 {
			return last, false, nil
		}
		*budget--
		last = tag
		st, err := h.tagState(ctx, repo, tag)
		if errors.Is(err, trust.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return "", false, Internal("could not read the tag "+repo+":"+tag, err)
		}
		if (l.vulnerable != "" && !st.Scan.Reaches(l.vulnerable)) || (l.unsigned && st.Signature.Status == "trusted") {
			continue
		}
		*out = append(*out, st)
	}
	return last, true, nil
}

// tagState reads repo:tag and its state.
func (h *Handler) tagState(ctx context.Context, repo, tag string) (tagState, error) {
	t, err := h.stored.Tag(ctx, repo, tag)
	if err != nil {
		return tagState{}, err
	}
	st := tagState{Repository: repo, Tag: tag, Digest: t.Digest, MediaType: t.MediaType, Size: t.Size, Pushed: t.Pushed.UTC(),
		Signature: &signatureState{Status: "no-policy"}, Scan: &scan.Summary{Status: scan.StatusNotScanned, Reason: "scanning is not running"}}
	if h.verdicts != nil && h.verdicts.Applies(repo) {
		v, err := h.verdicts.Verdict(ctx, repo, t.Digest)
		switch {
		case errors.Is(err, trust.ErrNotFound):
			return tagState{}, err
		case err != nil:
			h.log.WarnContext(ctx, "verify signatures for a listing", "repo", repo, "digest", t.Digest, "err", err)
			st.Signature = &signatureState{Status: "error", Reason: "signature verification failed; retry later"}
		default:
			status := "untrusted"
			if v.Trusted {
				status = "trusted"
			}
			st.Signature = &signatureState{Status: status, Policy: v.Policy, Mode: string(v.Mode), Signed: v.Signed,
				Signers: v.Signers, Reason: v.Reason}
		}
	}
	if h.scans != nil {
		if s := h.scans.Summary(ctx, repo, t.Digest, t.MediaType, t.Manifest); s != nil {
			s.Findings, s.Unchecked = nil, nil // the report has them: .../vulnerabilities
			st.Scan = s
		}
	}
	if h.withheld != nil {
		st.Withheld = h.withheld(ctx, repo, t.Digest, "") != nil
	}
	return st, nil
}

// setNext sets the Link header of the next page, as the registry's
// catalog and tag lists do.
func setNext(w http.ResponseWriter, r *http.Request, last string) {
	q := r.URL.Query()
	q.Set("last", last)
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	w.Header().Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", u.String()))
}

// parseTagsPath parses /api/v1/repositories/<name>/tags.
func parseTagsPath(p string) (repo string, ok bool) {
	rest, ok := strings.CutPrefix(p, repositoriesPath)
	if !ok {
		return "", false
	}
	repo, ok = strings.CutSuffix(rest, "/tags")
	return repo, ok && pauth.ValidRepository(repo)
}
