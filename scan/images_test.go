package scan

import (
	"archive/zip"
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
)

// The fixture images. Each has a known package inventory and known findings in testVulnDB.

const debianOSRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
`

const alpineOSRelease = `NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.20.3
PRETTY_NAME="Alpine Linux v3.20"
`

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/images/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// debianLayers: a Debian 12 base whose dpkg status has vulnerable perl (two binary packages,
// one a binNMU with its own version), pcre2 and apt, and an npm package and an opaque
// directory; an upper layer replaces the status file with apt upgraded past its fix, deletes
// the npm package with a whiteout and makes /opt/old opaque while adding a fixed minimist.
func debianLayers(t testing.TB) [][]byte {
	status := readTestdata(t, "debian-status")
	base := tarBytes(t,
		dir("etc"),
		file("etc/os-release", debianOSRelease),
		file("var/lib/dpkg/status", status),
		file("usr/lib/node_modules/lodash/package.json", `{"name":"lodash","version":"4.17.20"}`),
		file("opt/old/node_modules/minimist/package.json", `{"name":"minimist","version":"1.2.5"}`),
	)
	upper := tarBytes(t,
		file("var/lib/dpkg/status", strings.Replace(status, "Version: 2.6.1\n", "Version: 2.6.2\n", 1)),
		file("usr/lib/node_modules/.wh.lodash", ""),
		file("opt/old/.wh..wh..opq", ""),
		file("opt/old/node_modules/minimist/package.json", `{"name":"minimist","version":"1.2.6"}`),
	)
	return [][]byte{gzipBytes(t, base), upper}
}

var perlIDs = []string{
	"DEBIAN-CVE-2025-15649", "DEBIAN-CVE-2026-12087", "DEBIAN-CVE-2026-13221", "DEBIAN-CVE-2026-19487",
	"DEBIAN-CVE-2026-42496", "DEBIAN-CVE-2026-42497", "DEBIAN-CVE-2026-48959", "DEBIAN-CVE-2026-48962",
	"DEBIAN-CVE-2026-57432", "DEBIAN-CVE-2026-57433", "DEBIAN-CVE-2026-7010", "DEBIAN-CVE-2026-7017",
	"DEBIAN-CVE-2026-8376",
}

func debianWant() []want {
	var w []want
	w = append(w, want{"Debian:12", "libpcre2-8-0", "10.42-1", "DEBIAN-CVE-2026-103111", "10.42-1+deb12u2", "UNKNOWN", "pcre2"})
	for _, id := range perlIDs {
		w = append(w, want{"Debian:12", "libperl5.36", "5.36.0-7+deb12u1+b1", id, "5.36.0-7+deb12u4", "UNKNOWN", "perl"})
	}
	for _, id := range perlIDs {
		w = append(w, want{"Debian:12", "perl-base", "5.36.0-7+deb12u1", id, "5.36.0-7+deb12u4", "UNKNOWN", "perl"})
	}
	return w
}

// alpineLayers: Alpine 3.20 with etc/os-release a symlink to usr/lib/os-release, and an apk
// database naming openssl and busybox subpackages affected by Alpine secdb entries.
func alpineLayers(t testing.TB) [][]byte {
	return [][]byte{gzipBytes(t, tarBytes(t,
		symlink("etc/os-release", "../usr/lib/os-release"),
		file("usr/lib/os-release", alpineOSRelease),
		file("lib/apk/db/installed", readTestdata(t, "alpine-installed")),
	))}
}

func alpineWant() []want {
	busybox := func(pkg, src string) []want {
		return []want{
			{"Alpine:v3.20", pkg, "1.36.1-r28", "ALPINE-CVE-2023-42364", "1.36.1-r29", "UNKNOWN", src},
			{"Alpine:v3.20", pkg, "1.36.1-r28", "ALPINE-CVE-2023-42365", "1.36.1-r29", "UNKNOWN", src},
		}
	}
	openssl := func(pkg string) []want {
		return []want{
			{"Alpine:v3.20", pkg, "3.3.1-r0", "ALPINE-CVE-2024-5535", "3.3.1-r1", "UNKNOWN", "openssl"},
			{"Alpine:v3.20", pkg, "3.3.1-r0", "ALPINE-CVE-2024-6119", "3.3.2-r0", "UNKNOWN", "openssl"},
			{"Alpine:v3.20", pkg, "3.3.1-r0", "ALPINE-CVE-2024-9143", "3.3.2-r1", "UNKNOWN", "openssl"},
		}
	}
	var w []want
	w = append(w, busybox("busybox", "")...)
	w = append(w, openssl("libcrypto3")...)
	w = append(w, openssl("libssl3")...)
	return append(w, busybox("ssl_client", "busybox")...)
}

const ubuntuOSRelease = `PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
`

// ubuntuLayers: Ubuntu 22.04 LTS, with os-release where Ubuntu keeps it (usr/lib, linked
// from etc) and a dpkg status naming binary packages of openssl, zlib and tar.
func ubuntuLayers(t testing.TB) [][]byte {
	return [][]byte{gzipBytes(t, tarBytes(t,
		symlink("etc/os-release", "../usr/lib/os-release"),
		file("usr/lib/os-release", ubuntuOSRelease),
		file("var/lib/dpkg/status", readTestdata(t, "ubuntu-status")),
	))}
}

// ubuntuWant: osv.dev files Ubuntu's long-term releases as "Ubuntu:22.04:LTS"; those entries
// apply, by source package. The Ubuntu Pro entry (an +esm fix from a subscription
// repository), the 20.04 entry and the entry fixed in the installed version do not.
func ubuntuWant() []want {
	const eco = "Ubuntu:22.04"
	return []want{
		{eco, "libssl3", "3.0.2-0ubuntu1.8", "UBUNTU-TEST-0001", "3.0.2-0ubuntu1.10", "UNKNOWN", "openssl"},
		{eco, "openssl", "3.0.2-0ubuntu1.8", "UBUNTU-TEST-0001", "3.0.2-0ubuntu1.10", "UNKNOWN", ""},
		{eco, "zlib1g", "1:1.2.11.dfsg-2ubuntu9.2", "UBUNTU-TEST-0005", "1:1.2.11.dfsg-2ubuntu9.3", "UNKNOWN", "zlib"},
	}
}

const wolfiOSRelease = `ID=wolfi
NAME="Wolfi"
PRETTY_NAME="Wolfi"
VERSION_ID="20230201"
HOME_URL="https://wolfi.dev"
`

// wolfiLayers: Wolfi with the apk database of the Alpine fixture, whose busybox and openssl
// versions Alpine 3.20's records name as vulnerable.
func wolfiLayers(t testing.TB) [][]byte {
	return [][]byte{gzipBytes(t, tarBytes(t,
		file("etc/os-release", wolfiOSRelease),
		file("lib/apk/db/installed", readTestdata(t, "alpine-installed")),
	))}
}

// wolfiWant: Wolfi's packages are its own builds: only Wolfi's records apply, none of
// Alpine's. Wolfi files records under the origin (WOLFI-TEST-0001, openssl) or under the
// subpackage that ships the component (WOLFI-TEST-0002, libcrypto3): both are matched.
func wolfiWant() []want {
	return []want{
		{"Wolfi", "libcrypto3", "3.3.1-r0", "WOLFI-TEST-0001", "3.3.2-r0", "UNKNOWN", "openssl"},
		{"Wolfi", "libcrypto3", "3.3.1-r0", "WOLFI-TEST-0002", "3.3.3-r0", "UNKNOWN", ""},
		{"Wolfi", "libssl3", "3.3.1-r0", "WOLFI-TEST-0001", "3.3.2-r0", "UNKNOWN", "openssl"},
	}
}

const rockyOSRelease = `NAME="Rocky Linux"
VERSION="9.2 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.2"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.2 (Blue Onyx)"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
`

const rhelOSRelease = `NAME="Red Hat Enterprise Linux"
VERSION="9.2 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.2"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.2 (Plow)"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
`

// rpmDB reads one of the rpm database fixtures of the inventory package (see its make.sh):
// twelve packages, openssl and openssl-libs at epoch 1, perl-Carp with a version of its own
// beside its source package's.
func rpmDB(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("inventory/testdata/rpm/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rockyLayers: Rocky Linux 9 with the sqlite rpm database as rpm 4.16+ keeps it in
// var/lib/rpm, and usr/lib/sysimage/rpm a symlink to it.
func rockyLayers(t testing.TB) [][]byte {
	return [][]byte{gzipBytes(t, tarBytes(t,
		file("etc/os-release", rockyOSRelease),
		file("var/lib/rpm/rpmdb.sqlite", rpmDB(t, "rpmdb.sqlite")),
		symlink("usr/lib/sysimage/rpm", "../../../var/lib/rpm"),
	))}
}

// rockyWant: the Rocky Linux records of testdata/osv-extra compare epochs (openssl at
// epoch 1 is below 1:3.0.7-28 but above 3.0.8), name binary packages (perl-Carp matches,
// the source package perl does not), and keep releases apart (bash's Rocky Linux 8 entry
// does not apply).
func rockyWant() []want {
	const eco = "Rocky Linux:9"
	return []want{
		{eco, "glibc", "2.34-60.el9", "RLSA-TEST-0002", "2.34-83.el9.7", "UNKNOWN", ""},
		{eco, "glibc-common", "2.34-60.el9", "RLSA-TEST-0002", "2.34-83.el9.7", "UNKNOWN", ""},
		{eco, "glibc-minimal-langpack", "2.34-60.el9", "RLSA-TEST-0002", "2.34-83.el9.7", "UNKNOWN", ""},
		{eco, "openssl", "1:3.0.7-27.el9", "RLSA-TEST-0001", "1:3.0.7-28.el9", "UNKNOWN", ""},
		{eco, "openssl-libs", "1:3.0.7-27.el9", "RLSA-TEST-0001", "1:3.0.7-28.el9", "UNKNOWN", ""},
		{eco, "perl-Carp", "1.50-481.el9", "RLSA-TEST-0005", "1.52-1.el9", "UNKNOWN", ""},
	}
}

// rhelLayers: RHEL 9 with the database in usr/lib/sysimage/rpm (the 512-byte-page copy, so
// that its headers span overflow pages) and var/lib/rpm a symlink to it.
func rhelLayers(t testing.TB) [][]byte {
	return [][]byte{gzipBytes(t, tarBytes(t,
		file("etc/os-release", rhelOSRelease),
		file("usr/lib/sysimage/rpm/rpmdb.sqlite", rpmDB(t, "rpmdb-512.sqlite")),
		symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm"),
	))}
}

// rhelWant: Red Hat records match whichever repository stream of RHEL 9 they name
// (baseos, appstream); RHEL 8 and the 9.2 extended-support stream do not apply.
func rhelWant() []want {
	const eco = "Red Hat:enterprise_linux:9"
	return []want{
		{eco, "ncurses-base", "6.2-8.20210508.el9", "RHSA-TEST-0005", "0:6.2-10.20210508.el9", "UNKNOWN", ""},
		{eco, "ncurses-libs", "6.2-8.20210508.el9", "RHSA-TEST-0005", "0:6.2-10.20210508.el9", "UNKNOWN", ""},
		{eco, "openssl", "1:3.0.7-27.el9", "RHSA-TEST-0001", "1:3.0.7-28.el9_4", "UNKNOWN", ""},
		{eco, "openssl-libs", "1:3.0.7-27.el9", "RHSA-TEST-0001", "1:3.0.7-28.el9_4", "UNKNOWN", ""},
	}
}

const packageLock = `{
  "name": "app",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {"name": "app", "version": "1.0.0", "dependencies": {"lodash": "^4.17.20", "minimist": "^1.2.5"}},
    "node_modules/lodash": {"version": "4.17.20", "resolved": "https://registry.npmjs.org/lodash/-/lodash-4.17.20.tgz"},
    "node_modules/lodash-es": {"version": "4.17.21"},
    "node_modules/lodash.trim": {"version": "4.5.1"},
    "node_modules/minimist": {"version": "1.2.5"},
    "node_modules/mylib": {"resolved": "../mylib", "link": true}
  }
}`

var (
	goBinaryOnce sync.Once
	goBinaryData []byte
)

// languageLayers: no OS; a Go binary, an npm project (lockfile and node_modules), Python
// distributions (dist-info and egg-info) and Java archives (a jar, and a war nesting it).
func languageLayers(t testing.TB) [][]byte {
	goBinaryOnce.Do(func() { goBinaryData = goBinary(t) })
	if goBinaryData == nil {
		t.Fatal("go binary fixture failed to build")
	}
	jar := zipBytes(t, map[string]string{
		"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\nImplementation-Title: log4j-core\nImplementation-Version: 2.14.1\n",
		"META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties": "#Created by Apache Maven\nversion=2.14.1\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\n",
		"org/apache/logging/log4j/core/Logger.class":                        "\xca\xfe\xba\xbe",
	})
	war := zipBytes(t, map[string]string{
		"WEB-INF/lib/log4j-core-2.14.1.jar": string(jar),
		"WEB-INF/web.xml":                   "<web-app/>",
	})
	return [][]byte{
		gzipBytes(t, tarBytes(t,
			exe("usr/local/bin/goapp", string(goBinaryData)),
			file("app/package-lock.json", packageLock),
			file("app/node_modules/lodash/package.json", `{"name":"lodash","version":"4.17.20"}`),
			file("usr/lib/python3/site-packages/requests-2.30.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: requests\nVersion: 2.30.0\nSummary: Python HTTP for Humans.\n\nrequests body\n"),
			file("usr/lib/python3/site-packages/Werkzeug-2.3.7-py3.11.egg-info/PKG-INFO", "Metadata-Version: 2.1\nName: werkzeug\nVersion: 2.3.7\n"),
		)),
		tarBytes(t,
			file("opt/lib/log4j-core-2.14.1.jar", string(jar)),
			file("opt/webapps/app.war", string(war)),
		),
	}
}

func languageWant() []want {
	w := []want{
		{"Go", "golang.org/x/text", "0.3.5", "GO-2021-0113", "0.3.7", "UNKNOWN", ""},
		{"Go", "golang.org/x/text", "0.3.5", "GO-2022-1059", "0.3.8", "UNKNOWN", ""},
		{"Go", "golang.org/x/text", "0.3.5", "GO-2026-5970", "0.39.0", "UNKNOWN", ""},
	}
	for _, id := range []struct{ id, fixed string }{
		{"GO-2026-5026", "1.26.6"}, {"GO-2026-5942", "1.26.6"}, {"GO-2026-5972", "1.26.6"},
		{"GO-2026-6088", "1.26.6"}, {"GO-2026-6089", "1.26.6"}, {"GO-2026-6090", "1.26.6"},
		{"GO-2026-6091", "1.26.6"}, {"GO-2026-6218", "1.26.6"},
	} {
		w = append(w, want{"Go", "stdlib", "1.26.5", id.id, id.fixed, "UNKNOWN", ""})
	}
	return append(w,
		want{"Maven", "org.apache.logging.log4j:log4j-core", "2.14.1", "GHSA-7rjr-3q55-vv33", "2.16.0", "CRITICAL", ""},
		want{"Maven", "org.apache.logging.log4j:log4j-core", "2.14.1", "GHSA-jfh8-c2jp-5v3q", "2.15.0", "CRITICAL", ""},
		want{"PyPI", "requests", "2.30.0", "GHSA-j8r2-6x86-q33q", "2.31.0", "MEDIUM", ""},
		want{"PyPI", "werkzeug", "2.3.7", "GHSA-hrfv-mqp8-q5rw", "2.3.8", "MEDIUM", ""},
		want{"npm", "lodash", "4.17.20", "GHSA-29mw-wpgm-hmr9", "4.17.21", "MEDIUM", ""},
		want{"npm", "lodash", "4.17.20", "GHSA-35jh-r3h4-6jhm", "4.17.21", "HIGH", ""},
		want{"npm", "lodash.trim", "4.5.1", "GHSA-29mw-wpgm-hmr9", "", "MEDIUM", ""},
		want{"npm", "minimist", "1.2.5", "GHSA-xvch-5gv4-984h", "1.2.6", "CRITICAL", ""},
	)
}

// want is the part of a Finding the fixture tests pin down.
type want struct {
	Ecosystem, Package, Version, ID, Fixed, Severity, Source string
}

func project(fs []Finding) []want {
	out := make([]want, 0, len(fs))
	for _, f := range fs {
		out = append(out, want{f.Ecosystem, f.Package, f.Version, f.ID, f.FixedVersion, string(f.Severity.Level), f.SourcePackage})
	}
	return out
}

func zipBytes(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
