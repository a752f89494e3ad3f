package inventory

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDpkgStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []Package
	}{
		{"source with version", "Package: libperl5.36\nStatus: install ok installed\nSource: perl (5.36.0-7)\nVersion: 5.36.0-7+b1\n", []Package{
			{Name: "libperl5.36", Version: "5.36.0-7+b1", SourceName: "perl", SourceVersion: "5.36.0-7", Ecosystem: "Debian", Type: TypeDpkg},
		}},
		{"no source", "Package: apt\nStatus: install ok installed\nVersion: 2.6.1\n", []Package{
			{Name: "apt", Version: "2.6.1", SourceName: "apt", SourceVersion: "2.6.1", Ecosystem: "Debian", Type: TypeDpkg},
		}},
		{"distroless status.d without Status, CRLF, multi-line fields", "Package: tzdata\r\nVersion: 2024a-0+deb12u1\r\nDescription: time zone\r\n and daylight-saving time data\r\n\r\n", []Package{
			{Name: "tzdata", Version: "2024a-0+deb12u1", SourceName: "tzdata", SourceVersion: "2024a-0+deb12u1", Ecosystem: "Debian", Type: TypeDpkg},
		}},
		{"not installed ones skipped", "Package: a\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: b\nStatus: install ok half-installed\nVersion: 1\n\nPackage: c\nStatus: purge ok not-installed\n", nil},
		{"empty", "\n\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDpkgStatus([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"garbage\n", " continuation first\n", "Version: 1\n", "Package: x\nStatus: install ok installed\n", "Package: x\nVersion: 1\nSource: y 1.0\n"} {
		if _, err := ParseDpkgStatus([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseApkInstalled(t *testing.T) {
	t.Parallel()
	got, err := ParseApkInstalled([]byte("P:libssl3\nV:3.3.1-r0\no:openssl\n\nP:musl\nV:1.2.5-r0\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{
		{Name: "libssl3", Version: "3.3.1-r0", SourceName: "openssl", SourceVersion: "3.3.1-r0", Ecosystem: "Alpine", Type: TypeApk},
		{Name: "musl", Version: "1.2.5-r0", SourceName: "musl", SourceVersion: "1.2.5-r0", Ecosystem: "Alpine", Type: TypeApk},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"P:x\n", "V:1\n", "nonsense\n", "P:x\nV:1\n:\n"} {
		if _, err := ParseApkInstalled([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParsePackageLockV1(t *testing.T) {
	t.Parallel()
	got, err := ParsePackageLock([]byte(`{"lockfileVersion":1,"dependencies":{
		"a":{"version":"1.0.0","dependencies":{"minimist":{"version":"0.0.8"}}},
		"gitdep":{"version":"github:user/repo#abc"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, p := range got {
		names[p.Name] = p.Version
	}
	if diff := cmp.Diff(map[string]string{"a": "1.0.0", "minimist": "0.0.8"}, names); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestOSReleaseEcosystem(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"ID=debian\nVERSION_ID=\"12\"\n":                                                  "Debian:12",
		"ID=alpine\nVERSION_ID=3.20.3\n":                                                  "Alpine:v3.20",
		"ID='alpine'\nVERSION_ID='3.21.0_alpha20240807'\n":                                "Alpine:v3.21",
		"ID=ubuntu\nVERSION_ID=\"22.04\"\n":                                               "Ubuntu:22.04",
		"ID=wolfi\nVERSION_ID=\"20230201\"\n":                                             "Wolfi",
		"ID=chainguard\nVERSION_ID=\"20230214\"\n":                                        "Chainguard",
		"ID=debian\nPRETTY_NAME=\"Debian trixie/sid\"\n":                                  "Debian",
		"# comment\nID=fedora\nVERSION_ID=40\n":                                           "",
		"PRETTY_NAME=\"Distroless\"\nID=debian\nVERSION_ID=\"12\"":                        "Debian:12",
		"ID=\"rhel\"\nVERSION_ID=\"9.4\"\n":                                               "Red Hat:enterprise_linux:9",
		"ID=\"rhel\"\n":                                                                   "Red Hat",
		"ID=\"rocky\"\nVERSION_ID=\"9.2\"\n":                                              "Rocky Linux:9",
		"ID=\"almalinux\"\nVERSION_ID=\"8.10\"\n":                                         "AlmaLinux:8",
		"ID=\"sles\"\nVERSION_ID=\"15.5\"\n":                                              "SUSE:15 SP5",
		"ID=\"sles\"\nVERSION_ID=\"15\"\n":                                                "SUSE:15",
		"ID=\"opensuse-leap\"\nVERSION_ID=\"15.6\"\n":                                     "openSUSE:Leap 15.6",
		"ID=\"opensuse-tumbleweed\"\nVERSION_ID=\"20240801\"\n":                           "openSUSE:Tumbleweed",
		"ID=mageia\nVERSION_ID=9\n":                                                       "Mageia:9",
		"ID=openEuler\nVERSION_ID=\"24.03\"\nPRETTY_NAME=\"openEuler 24.03 (LTS-SP1)\"\n": "openEuler:24.03-LTS-SP1",
		"ID=openEuler\nVERSION_ID=\"24.09\"\nPRETTY_NAME=\"openEuler 24.09\"\n":           "openEuler:24.09",
		"ID=openEuler\nVERSION_ID=\"22.03\"\n":                                            "openEuler:22.03",
		"ID=centos\nVERSION_ID=\"9\"\n":                                                   "",
	}
	for in, want := range tests {
		if got := ParseOSRelease([]byte(in)).Ecosystem(); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestGoStdlibVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"go1.22.1": "1.22.1", "go1.21": "1.21.0", "go1.24.0 X:boringcrypto": "1.24.0",
		"devel go1.23-abc": "", "go1.23rc1": "1.23rc1", "": "",
	} {
		if got := goStdlibVersion(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestMerge(t *testing.T) {
	t.Parallel()
	pkg := func(name, loc string) Package {
		return Package{Name: name, Version: "1", Ecosystem: "npm", Type: TypeNpm, Location: loc}
	}
	file := func(p, name string) File { return File{Path: p, Packages: []Package{pkg(name, p)}} }
	layers := []*Layer{
		{Files: []File{
			file("a/node_modules/x/package.json", "x"),
			file("b/node_modules/y/package.json", "y"),
			file("c/node_modules/z/package.json", "z"),
			file("d/package-lock.json", "d"),
			{Path: "etc/os-release", OSRelease: &OSRelease{ID: "debian", VersionID: "12"}},
			{Path: "var/lib/dpkg/status", Packages: []Package{{Name: "apt", Version: "2", SourceName: "apt", SourceVersion: "2", Ecosystem: "Debian", Type: TypeDpkg, Location: "var/lib/dpkg/status"}}},
		}},
		{
			Whiteouts:  []string{"a/node_modules/x", "d/package-lock.json"},
			OpaqueDirs: []string{"b"},
			Files: []File{
				file("b/node_modules/y2/package.json", "y2"), // same layer as the opaque marker: stays
				{Path: "c/node_modules/z/package.json"},      // replaced by a file with no package
			},
		},
		{Files: []File{file("a/node_modules/x/package.json", "x-again")}}, // re-added above the whiteout
	}
	img := Merge(layers)
	var got []string
	for _, p := range img.Packages {
		got = append(got, p.Ecosystem+" "+p.Name+" "+p.Location)
	}
	want := []string{
		"npm x-again a/node_modules/x/package.json",
		"npm y2 b/node_modules/y2/package.json",
		"Debian:12 apt var/lib/dpkg/status",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
