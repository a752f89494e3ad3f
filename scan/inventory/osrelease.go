package inventory

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// ParseOSRelease reads the identifying fields of an os-release file (KEY=value lines, values
// optionally quoted). It never fails: unknown lines are ignored.
func ParseOSRelease(data []byte) *OSRelease {
	var r OSRelease
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			if v[0] == '"' {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				} else {
					v = v[1 : len(v)-1]
				}
			} else {
				v = v[1 : len(v)-1]
			}
		}
		switch k {
		case "ID":
			r.ID = v
		case "VERSION_ID":
			r.VersionID = v
		case "VERSION_CODENAME":
			r.VersionCodename = v
		case "PRETTY_NAME":
			r.PrettyName = v
		}
	}
	return &r
}

// Ecosystem returns the OSV ecosystem of the distribution's packages with its release:
// "Debian:12", "Alpine:v3.20" (major.minor of VERSION_ID with a leading v), "Ubuntu:22.04".
// Without a usable VERSION_ID it returns the bare distribution name; for a distribution it
// does not know it returns "".
func (r *OSRelease) Ecosystem() string {
	if r == nil {
		return ""
	}
	switch r.ID {
	case "debian":
		if r.VersionID == "" {
			return EcosystemDebian
		}
		major, _, _ := strings.Cut(r.VersionID, ".")
		return EcosystemDebian + ":" + major
	case "alpine":
		parts := strings.SplitN(r.VersionID, ".", 3)
		if len(parts) < 2 {
			return EcosystemAlpine
		}
		return EcosystemAlpine + ":v" + parts[0] + "." + parts[1]
	case "ubuntu":
		if r.VersionID == "" {
			return EcosystemUbuntu
		}
		return EcosystemUbuntu + ":" + r.VersionID
	}
	return ""
}
