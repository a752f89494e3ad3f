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
// "Debian:12", "Alpine:v3.20" (major.minor of VERSION_ID with a leading v), "Ubuntu:22.04",
// "Wolfi" and "Chainguard" (rolling, filed without a release), or for an rpm distribution what rpmEcosystem says. Without a usable VERSION_ID it returns
// the bare distribution name; for a distribution it does not know it returns "".
func (r *OSRelease) Ecosystem() string {
	if r == nil {
		return ""
	}
	switch r.ID {
	case "debian":
		return withRelease(EcosystemDebian, major(r.VersionID))
	case "alpine":
		parts := strings.SplitN(r.VersionID, ".", 3)
		if len(parts) < 2 {
			return EcosystemAlpine
		}
		return EcosystemAlpine + ":v" + parts[0] + "." + parts[1]
	case "ubuntu":
		return withRelease(EcosystemUbuntu, r.VersionID)
	case "wolfi":
		return EcosystemWolfi
	case "chainguard":
		return EcosystemChainguard
	}
	return r.rpmEcosystem()
}

// rpmEcosystem is Ecosystem for the rpm distributions. Rocky Linux and AlmaLinux carry the
// major release ("Rocky Linux:9", as osv.dev files them; osv-scanner leaves Rocky Linux's
// out and so matches every release's records). Red Hat and SUSE name finer product
// streams than os-release tells, so their key is the release those streams belong to:
// "Red Hat:enterprise_linux:9" for RHEL 9.x, "SUSE:15 SP5" for SLES 15.5 (see
// vulndb's index). openSUSE Leap is "openSUSE:Leap 15.5", Tumbleweed "openSUSE:Tumbleweed",
// Mageia "Mageia:9", openEuler the version and support qualifier of its PRETTY_NAME
// ("openEuler:24.03-LTS-SP1" for "openEuler 24.03 (LTS-SP1)"), or else its VERSION_ID.
func (r *OSRelease) rpmEcosystem() string {
	switch r.ID {
	case "rhel":
		if m := major(r.VersionID); m != "" {
			return EcosystemRedHat + ":enterprise_linux:" + m
		}
		return EcosystemRedHat
	case "rocky":
		return withRelease(EcosystemRockyLinux, major(r.VersionID))
	case "almalinux":
		return withRelease(EcosystemAlmaLinux, major(r.VersionID))
	case "sles", "sles_sap", "sled":
		m, minor, _ := strings.Cut(r.VersionID, ".")
		if minor != "" && minor != "0" {
			m += " SP" + minor
		}
		return withRelease(EcosystemSUSE, m)
	case "opensuse-leap":
		if r.VersionID == "" {
			return EcosystemOpenSUSE
		}
		return EcosystemOpenSUSE + ":Leap " + r.VersionID
	case "opensuse-tumbleweed":
		return EcosystemOpenSUSE + ":Tumbleweed"
	case "mageia":
		return withRelease(EcosystemMageia, r.VersionID)
	case "openEuler", "openeuler":
		return withRelease(EcosystemOpenEuler, openEulerRelease(r))
	}
	return ""
}

// IsRpmEcosystem reports whether eco, with or without its release, is one of an rpm
// distribution.
func IsRpmEcosystem(eco string) bool {
	base, _, _ := strings.Cut(eco, ":")
	switch base {
	case EcosystemRedHat, EcosystemRockyLinux, EcosystemAlmaLinux, EcosystemSUSE, EcosystemOpenSUSE, EcosystemMageia, EcosystemOpenEuler:
		return true
	}
	return false
}

// openEulerRelease turns PRETTY_NAME "openEuler 24.03 (LTS-SP1)" into "24.03-LTS-SP1" and
// "openEuler 24.09" into "24.09", as osv.dev names openEuler releases; VERSION_ID otherwise.
func openEulerRelease(r *OSRelease) string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(r.PrettyName), "openEuler ")
	if !ok {
		return r.VersionID
	}
	version, qualifier, _ := strings.Cut(rest, " ")
	qualifier = strings.Trim(strings.TrimSpace(qualifier), "()")
	qualifier = strings.Trim(strings.ReplaceAll(qualifier, " ", "-"), "-")
	switch {
	case version == "" || strings.ContainsAny(version, "()"):
		return r.VersionID
	case qualifier == "":
		return version
	}
	return version + "-" + qualifier
}

// major is the part of a VERSION_ID before its first dot.
func major(versionID string) string {
	m, _, _ := strings.Cut(versionID, ".")
	return m
}

// withRelease is "ecosystem:release", or the bare ecosystem when the release is empty.
func withRelease(ecosystem, release string) string {
	if release == "" {
		return ecosystem
	}
	return ecosystem + ":" + release
}
