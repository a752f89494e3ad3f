package inventory

import (
	"bytes"
	"fmt"
	"strings"
)

// ParseApkInstalled reads apk's database (lib/apk/db/installed) and returns the installed
// packages; the source package is the "o:" (origin) line, the package's own name when
// absent, and the source version is the package version. Lines that are not "X:value" and
// packages without P: or V: fail with ErrMalformed.
func ParseApkInstalled(data []byte) ([]Package, error) {
	var pkgs []Package
	var cur Package
	start := 0
	flush := func() error {
		if cur == (Package{}) {
			return nil
		}
		if cur.Name == "" || cur.Version == "" {
			return fmt.Errorf("%w: line %d: package without a P (name) or V (version) line", ErrMalformed, start)
		}
		if cur.SourceName == "" {
			cur.SourceName = cur.Name
		}
		cur.SourceVersion = cur.Version
		cur.Ecosystem, cur.Type = EcosystemAlpine, TypeApk
		pkgs = append(pkgs, cur)
		cur = Package{}
		return nil
	}
	for i, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSuffix(string(raw), "\r")
		n := i + 1
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		if len(line) < 2 || line[1] != ':' {
			return nil, fmt.Errorf("%w: line %d: not a \"X:value\" line", ErrMalformed, n)
		}
		if cur == (Package{}) {
			start = n
		}
		v := line[2:]
		switch line[0] {
		case 'P':
			cur.Name = v
		case 'V':
			cur.Version = v
		case 'o':
			cur.SourceName = v
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return pkgs, nil
}
