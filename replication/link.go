package replication

import "strings"

// link is one link of a Link header (RFC 8288).
type link struct {
	target string
	rel    string
}

// parseLinks parses Link header values: comma-separated links, each a
// URI reference in angle brackets followed by ;-separated parameters.
// Malformed links are skipped.
func parseLinks(values []string) []link {
	var out []link
	for _, v := range values {
		for len(v) > 0 {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				// Skip to the next link.
				i := strings.IndexByte(v, ',')
				if i < 0 {
					break
				}
				v = v[i+1:]
				continue
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				break
			}
			l := link{target: v[1:end]}
			v = v[end+1:]
			params := v
			if i := strings.IndexByte(v, ','); i >= 0 {
				params, v = v[:i], v[i+1:]
			} else {
				v = ""
			}
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "rel") {
					l.rel = strings.ToLower(strings.Trim(strings.TrimSpace(val), `"`))
				}
			}
			out = append(out, l)
		}
	}
	return out
}
