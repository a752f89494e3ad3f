package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkShape walks a parsed configuration against the Config type and
// returns every problem the strict decoder would stop at the first of,
// each with its key path and line: unknown keys (with the nearest known
// one), values of the wrong kind, and durations that do not parse.
func checkShape(root *yaml.Node) []error {
	if root == nil || len(root.Content) == 0 {
		return nil
	}
	var errs []error
	walkShape(root.Content[0], reflect.TypeOf(Config{}), "", &errs)
	return errs
}

var (
	durationType        = reflect.TypeOf(Duration(0))
	unmarshalerType     = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

func walkShape(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	bad := func(n *yaml.Node, format string, args ...any) {
		key := path
		if key == "" {
			key = "(top level)"
		}
		*errs = append(*errs, fmt.Errorf("%s: %s (line %d)", key, fmt.Sprintf(format, args...), n.Line))
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		// Not followed: an alias may expand without bound (the strict
		// decoder that follows checks what it stands for, with its own
		// limits).
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch {
	case t == durationType:
		var s string
		if n.Kind != yaml.ScalarNode || n.Decode(&s) != nil {
			bad(n, "want a duration such as 30s")
			return
		}
		if _, err := time.ParseDuration(s); err != nil {
			bad(n, "%q is not a duration (e.g. 30s, 5m, 24h)", s)
		}
	case reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType):
		// A type that decodes itself says what is wrong itself.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			msg := err.Error()
			if _, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "line ") {
				msg = rest
			}
			bad(n, "%s", msg)
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad(n, "want a mapping of keys")
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				msg := "unknown key"
				if near := nearest(k.Value, fields); near != "" {
					msg += " (did you mean " + near + "?)"
				}
				*errs = append(*errs, fmt.Errorf("%s: %s (line %d)", sub, msg, k.Line))
				continue
			}
			walkShape(v, ft, sub, errs)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad(n, "want a list")
			return
		}
		for i, e := range n.Content {
			walkShape(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad(n, "want a mapping")
		}
	default:
		if n.Kind != yaml.ScalarNode {
			bad(n, "want a single value, not a %s", kindName(n.Kind))
			return
		}
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			bad(n, "%q is not a %s", n.Value, typeName(t))
		}
	}
}

// yamlFields maps the YAML keys of a struct to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out[name] = f.Type
	}
	return out
}

// nearest returns the known key closest to key when it is close: it
// differs only in case, or in at most half its length (two edits at least)
// from the key, or from the start of the longer of the two (pasword:
// passwordFile; adress: addr).
func nearest(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	lk := strings.ToLower(key)
	best, bestD := "", max(2, len(key)/2)+1
	for _, name := range names {
		if strings.EqualFold(name, key) {
			return name
		}
		ln := strings.ToLower(name)
		d := editDistance(lk, ln)
		switch {
		case len(ln) > len(lk):
			d = min(d, editDistance(lk, ln[:len(lk)])+1)
		case len(lk) > len(ln):
			d = min(d, editDistance(lk[:len(ln)], ln)+1)
		}
		if d < bestD {
			best, bestD = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (short strings).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative whole number"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return "string"
}
