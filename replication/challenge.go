package replication

import (
	"strings"
)

// challenge is one authentication challenge of a WWW-Authenticate header.
type challenge struct {
	// Scheme is lower-case: "bearer", "basic".
	Scheme string
	// Params holds the auth-params, keys in lower case.
	Params map[string]string
}

// parseChallenges parses the WWW-Authenticate header values of an answer
// (RFC 9110 section 11.6.1): each value may hold several challenges, each a
// scheme followed by comma-separated auth-params whose values are tokens or
// quoted strings. Malformed parts are skipped; it never fails.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		out = append(out, parseChallengeList(v)...)
	}
	return out
}

func parseChallengeList(s string) []challenge {
	var out []challenge
	p := &headerParser{s: s}
	for {
		p.skip(" \t,")
		if p.done() {
			return out
		}
		scheme := p.token()
		if scheme == "" {
			p.pos++ // not a token character: skip it
			continue
		}
		c := challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
		for {
			start := p.pos
			p.skip(" \t,")
			key := p.token()
			p.skip(" \t")
			if key == "" || !p.peek('=') {
				// A new challenge, a token68 or garbage: not a param.
				if key != "" || start == p.pos {
					p.pos = start
				}
				break
			}
			p.pos++ // '='
			p.skip(" \t")
			var val string
			if p.peek('"') {
				val = p.quoted()
			} else {
				val = p.bareValue()
			}
			c.Params[strings.ToLower(key)] = val
		}
		out = append(out, c)
		if p.pos < len(p.s) && !isTokenChar(p.s[p.pos]) && p.s[p.pos] != ',' && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' {
			p.pos++ // skip what cannot start anything
		}
	}
}

// headerParser walks a header value.
type headerParser struct {
	s   string
	pos int
}

func (p *headerParser) done() bool { return p.pos >= len(p.s) }

func (p *headerParser) peek(c byte) bool { return p.pos < len(p.s) && p.s[p.pos] == c }

func (p *headerParser) skip(set string) {
	for p.pos < len(p.s) && strings.IndexByte(set, p.s[p.pos]) >= 0 {
		p.pos++
	}
}

// token reads an RFC 9110 token.
func (p *headerParser) token() string {
	start := p.pos
	for p.pos < len(p.s) && isTokenChar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// bareValue reads an unquoted param value. The grammar says token, but
// some servers leave URLs unquoted, so it runs to the next comma or space.
func (p *headerParser) bareValue() string {
	start := p.pos
	for p.pos < len(p.s) && strings.IndexByte(", \t\"", p.s[p.pos]) < 0 {
		p.pos++
	}
	return p.s[start:p.pos]
}

// quoted reads a quoted string starting at '"', undoing backslash escapes.
// An unterminated string runs to the end of the value.
func (p *headerParser) quoted() string {
	p.pos++ // opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && p.pos < len(p.s):
			b.WriteByte(p.s[p.pos])
			p.pos++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isTokenChar reports whether c is an RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
