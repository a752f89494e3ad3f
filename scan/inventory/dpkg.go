package inventory

import (
	"bytes"
	"fmt"
	"strings"
)

// ParseDpkgStatus reads a dpkg status file (var/lib/dpkg/status, or one file of distroless'
// var/lib/dpkg/status.d/) and returns the installed packages, with their source package and
// source version (from "Source: name" or "Source: name (version)"; the binary's own name and
// version when absent). Paragraphs whose Status is present but not "... installed" are
// skipped; a paragraph without Status counts as installed, as in status.d. Lines that are
// not fields, paragraphs without Package, and installed packages without Version fail with
// ErrMalformed.
func ParseDpkgStatus(data []byte) ([]Package, error) {
	var pkgs []Package
	err := forEachStanza(data, func(line int, fields map[string]string) error {
		name := fields["package"]
		if name == "" {
			return fmt.Errorf("%w: line %d: paragraph without Package", ErrMalformed, line)
		}
		if st, ok := fields["status"]; ok {
			w := strings.Fields(st)
			if len(w) == 0 || w[len(w)-1] != "installed" {
				return nil
			}
		}
		version := fields["version"]
		if version == "" {
			return fmt.Errorf("%w: line %d: package %s has no Version", ErrMalformed, line, name)
		}
		srcName, srcVersion := name, version
		if src := fields["source"]; src != "" {
			n, v, ok := strings.Cut(src, " ")
			srcName = n
			if ok {
				v = strings.TrimSpace(v)
				if !strings.HasPrefix(v, "(") || !strings.HasSuffix(v, ")") {
					return fmt.Errorf("%w: line %d: package %s: bad Source %q", ErrMalformed, line, name, src)
				}
				srcVersion = strings.TrimSpace(v[1 : len(v)-1])
			}
		}
		pkgs = append(pkgs, Package{
			Name: name, Version: version,
			SourceName: srcName, SourceVersion: srcVersion,
			Ecosystem: EcosystemDebian, Type: TypeDpkg,
		})
		return nil
	})
	return pkgs, err
}

// forEachStanza splits RFC 822 style paragraphs (Debian control syntax): "Field: value" lines,
// continuation lines starting with a space or tab, paragraphs separated by blank lines. Field
// names are lower-cased. fn gets the line number the paragraph starts on.
func forEachStanza(data []byte, fn func(line int, fields map[string]string) error) error {
	fields := map[string]string{}
	start, last := 0, ""
	flush := func() error {
		if len(fields) == 0 {
			return nil
		}
		err := fn(start, fields)
		fields = map[string]string{}
		last = ""
		return err
	}
	for i, raw := range bytes.Split(data, []byte("\n")) {
		raw = bytes.TrimSuffix(raw, []byte("\r"))
		n := i + 1
		switch {
		case len(bytes.TrimSpace(raw)) == 0:
			if err := flush(); err != nil {
				return err
			}
		case raw[0] == ' ' || raw[0] == '\t':
			if last == "" {
				return fmt.Errorf("%w: line %d: continuation line outside a field", ErrMalformed, n)
			}
			// Continuations of multi-line fields (Description, Conffiles) are not needed,
			// nor copied.
		case raw[0] == '#':
		default:
			k, v, ok := strings.Cut(string(raw), ":")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				return fmt.Errorf("%w: line %d: not a field", ErrMalformed, n)
			}
			if len(fields) == 0 {
				start = n
			}
			last = strings.ToLower(k)
			fields[last] = strings.TrimSpace(v)
		}
	}
	return flush()
}
