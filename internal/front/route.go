package front

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	pauth "github.com/portcullis/portcullis/auth"
)

// Kind is the kind of a /v2/ endpoint.
type Kind int

// The /v2/ endpoints of the distribution spec.
const (
	KindBase Kind = iota + 1
	KindCatalog
	KindTags
	KindManifest
	KindBlob
	KindUpload
	KindReferrers
)

// Route is a parsed /v2/ request path.
type Route struct {
	Kind Kind
	// Name is the repository name (empty for base and catalog).
	Name string
	// Tag is set for a manifest addressed by tag.
	Tag string
	// Digest is set for a manifest, blob or referrers subject addressed by digest.
	Digest digest.Digest
	// Upload is the upload session id ("" when starting one).
	Upload string
}

// ErrUnknownRoute is returned by ParseRoute for a path that is no endpoint
// of the distribution spec.
var ErrUnknownRoute = errors.New("no such endpoint")

// ParseRoute parses a request path below /v2/. It returns ErrUnknownRoute for
// a path of no known shape, and an errcode error (NAME_INVALID, TAG_INVALID or
// DIGEST_INVALID, each 400) for a known shape with an invalid part, with a
// message that names the part.
func ParseRoute(p string) (Route, error) {
	if p == "/v2/" || p == "/v2" {
		return Route{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return Route{}, ErrUnknownRoute
	}
	if rest == "_catalog" {
		return Route{Kind: KindCatalog}, nil
	}
	var rt Route
	var ref string
	switch {
	case strings.HasSuffix(rest, "/tags/list"):
		rt.Kind, rt.Name = KindTags, strings.TrimSuffix(rest, "/tags/list")
	case cut(rest, "/blobs/uploads/", &rt.Name, &rt.Upload):
		rt.Kind = KindUpload
	case cut(rest, "/manifests/", &rt.Name, &ref):
		rt.Kind = KindManifest
	case cut(rest, "/blobs/", &rt.Name, &ref):
		rt.Kind = KindBlob
	case cut(rest, "/referrers/", &rt.Name, &ref):
		rt.Kind = KindReferrers
	default:
		return Route{}, ErrUnknownRoute
	}
	if rt.Name == "" {
		return Route{}, ErrUnknownRoute
	}
	if err := validateName(rt.Name); err != nil {
		return Route{}, err
	}
	switch rt.Kind {
	case KindManifest:
		if strings.Contains(ref, ":") {
			d, err := parseDigest(ref)
			if err != nil {
				return Route{}, err
			}
			rt.Digest = d
		} else {
			if !anchoredTag(ref) {
				return Route{}, errcode.ErrorCodeTagInvalid.WithMessage(fmt.Sprintf(
					"invalid tag %s: a tag is 1 to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'", quoteShort(ref)))
			}
			rt.Tag = ref
		}
	case KindBlob, KindReferrers:
		d, err := parseDigest(ref)
		if err != nil {
			return Route{}, err
		}
		rt.Digest = d
	}
	return rt, nil
}

// cut splits s at the last sep into name and a final segment with no '/'.
func cut(s, sep string, name, last *string) bool {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return false
	}
	tail := s[i+len(sep):]
	if strings.Contains(tail, "/") {
		return false
	}
	*name, *last = s[:i], tail
	return true
}

func anchoredTag(s string) bool {
	loc := reference.TagRegexp.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}

// validateName checks a repository name against the distribution spec's
// grammar, on every route: no upper case and no host:port in any component
// (reference.WithName would take those as a domain), so that a name is
// stored, and matched by policy patterns, exactly as written.
func validateName(name string) error {
	if !pauth.ValidRepository(name) {
		return errcode.ErrorCodeNameInvalid.WithMessage(fmt.Sprintf(
			"invalid repository name %s: names are lower-case path components of letters, digits and separators ('.', '_', '__', '-'), at most 255 characters",
			quoteShort(name)))
	}
	return nil
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", errcode.ErrorCodeDigestInvalid.WithMessage(fmt.Sprintf("invalid digest %s: %v", quoteShort(s), err))
	}
	return d, nil
}

func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// queryValue returns r.URL.Query().Get(key), without parsing (and
// allocating for) a request that has no query, as most have none.
func queryValue(r *http.Request, key string) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get(key)
}

// contentRange is the Content-Range of a chunked upload, START-END.
var contentRange = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9]{1,19}-[0-9]{1,19}$`) })

// checkParams refuses, as a client error, the parameters the registry core
// would otherwise fail on with an internal error: a pagination marker that
// is no tag or repository name (the core uses it in a storage path), a
// Content-Range that is not START-END.
func checkParams(r *http.Request, rt Route) error {
	last := queryValue(r, "last")
	switch {
	case rt.Kind == KindTags && last != "" && !anchoredTag(last):
		return errcode.ErrorCodeTagInvalid.WithMessage("last must be a tag from the previous page's Link header")
	case rt.Kind == KindCatalog && last != "" && !pauth.ValidRepository(last):
		return errcode.ErrorCodeNameInvalid.WithMessage("last must be a repository name from the previous page's Link header")
	case rt.Kind == KindUpload && r.Method == http.MethodPatch:
		if cr := r.Header.Get("Content-Range"); cr != "" && !contentRange().MatchString(cr) {
			return errcode.ErrorCodeRangeInvalid.WithMessage("Content-Range must be START-END, the byte offsets of the chunk (as in 0-1023)")
		}
	}
	return nil
}
