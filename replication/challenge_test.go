package replication

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseChallenges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		values []string
		want   []challenge
	}{
		{"docker hub", []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`},
			[]challenge{{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}}}},
		{"ghcr", []string{`Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull"`},
			[]challenge{{"bearer", map[string]string{"realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:user/image:pull"}}}},
		{"basic", []string{`Basic realm="Registry Realm"`},
			[]challenge{{"basic", map[string]string{"realm": "Registry Realm"}}}},
		{"bare scheme", []string{`Basic`}, []challenge{{"basic", map[string]string{}}}},
		{"two challenges in one value", []string{`Basic realm="r", Bearer realm="https://a/token", service=svc`},
			[]challenge{{"basic", map[string]string{"realm": "r"}}, {"bearer", map[string]string{"realm": "https://a/token", "service": "svc"}}}},
		{"two values", []string{`Negotiate`, `BEARER Realm="x"`},
			[]challenge{{"negotiate", map[string]string{}}, {"bearer", map[string]string{"realm": "x"}}}},
		{"spaces and escapes", []string{`Bearer  realm = "a\"b" ,  scope="repository:a/b:pull,push"`},
			[]challenge{{"bearer", map[string]string{"realm": `a"b`, "scope": "repository:a/b:pull,push"}}}},
		{"token68-like value", []string{`Bearer realm=https://a/token`},
			[]challenge{{"bearer", map[string]string{"realm": "https://a/token"}}}},
		{"unterminated quote", []string{`Bearer realm="abc`},
			[]challenge{{"bearer", map[string]string{"realm": "abc"}}}},
		{"garbage", []string{`@@@ , ,`}, nil},
		{"empty", []string{``}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := parseChallenges(tc.values)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(challenge{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// formatChallenges writes challenges back as a header value, every
// param quoted.
func formatChallenges(cs []challenge) string {
	var parts []string
	for _, c := range cs {
		var params []string
		for _, k := range slices.Sorted(maps.Keys(c.Params)) {
			v := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(c.Params[k])
			params = append(params, k+`="`+v+`"`)
		}
		parts = append(parts, strings.TrimSpace(c.Scheme+" "+strings.Join(params, ", ")))
	}
	return strings.Join(parts, ", ")
}

// FuzzParseChallenges checks that the parser never fails and that what it
// returns is well formed and survives being written back and parsed again.
func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`,
		`Basic realm="r", Bearer realm="https://a/token", service=svc`,
		`Bearer realm="a\"b\\c"`,
		`Bearer realm=`,
		`Bearer ,,,realm="x",,`,
		`Basic abc==`,
		`"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs := parseChallenges([]string{s})
		for _, c := range cs {
			if c.Scheme == "" || c.Scheme != strings.ToLower(c.Scheme) || !isToken(c.Scheme) {
				t.Fatalf("scheme %q is not a lower-case token", c.Scheme)
			}
			for k := range c.Params {
				if k == "" || k != strings.ToLower(k) || !isToken(k) {
					t.Fatalf("param name %q is not a lower-case token", k)
				}
			}
		}
		again := parseChallenges([]string{formatChallenges(cs)})
		if diff := cmp.Diff(cs, again, cmp.AllowUnexported(challenge{})); diff != "" {
			t.Fatalf("parse(format(parse(%q))) differs (-first +second):\n%s", s, diff)
		}
	})
}

func isToken(s string) bool {
	for i := range len(s) {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return s != ""
}

func TestParseLinks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		values []string
		want   []link
	}{
		{"next", []string{`</v2/a/referrers/sha256:1?n=2>; rel="next"`}, []link{{"/v2/a/referrers/sha256:1?n=2", "next"}}},
		{"unquoted rel", []string{`<https://r/x>;rel=next`}, []link{{"https://r/x", "next"}}},
		{"several", []string{`<a>; rel="prev", <b>; rel="next"`}, []link{{"a", "prev"}, {"b", "next"}}},
		{"garbage first", []string{`junk, <b>; rel=next`}, []link{{"b", "next"}}},
		{"unterminated", []string{`<abc; rel=next`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, parseLinks(tc.values), cmp.AllowUnexported(link{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
