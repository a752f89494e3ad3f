package inventory

import (
	"archive/tar"
	"bytes"
	"context"
	"path"
	"strings"
	"testing"
)

func checkPackages(t *testing.T, pkgs []Package) {
	t.Helper()
	for _, p := range pkgs {
		// rpm packages get their ecosystem from the image's os-release, in Merge.
		if p.Name == "" || p.Version == "" || (p.Ecosystem == "" && p.Type != TypeRpm) || p.Type == "" {
			t.Fatalf("incomplete package %+v", p)
		}
	}
}

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add([]byte("Package: perl-base\nStatus: install ok installed\nSource: perl (5.36.0-7)\nVersion: 5.36.0-7+b1\n\n"))
	f.Add([]byte("Package: a\nDescription: x\n y\n .\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := ParseDpkgStatus(data)
		if err == nil {
			checkPackages(t, pkgs)
		}
	})
}

func FuzzParseApkInstalled(f *testing.F) {
	f.Add([]byte("P:libssl3\nV:3.3.1-r0\no:openssl\n\nP:musl\nV:1.2.5-r0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := ParseApkInstalled(data)
		if err == nil {
			checkPackages(t, pkgs)
		}
	})
}

func FuzzParsePackageLock(f *testing.F) {
	f.Add([]byte(`{"lockfileVersion":3,"packages":{"":{},"node_modules/a/node_modules/b":{"version":"1.0.0"}}}`))
	f.Add([]byte(`{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := ParsePackageLock(data)
		if err == nil {
			checkPackages(t, pkgs)
		}
		checkPackages(t, ParseNodePackage(data))
		checkPackages(t, ParsePythonMetadata(data))
		ParseOSRelease(data).Ecosystem()
	})
}

func FuzzParseJavaArchive(f *testing.F) {
	f.Add([]byte("PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPackages(t, ParseJavaArchive(bytes.NewReader(data), int64(len(data)), "x.jar", 1<<20))
		checkPackages(t, ParseGoBinary(bytes.NewReader(data)))
	})
}

func FuzzParseRpmDB(f *testing.F) {
	for _, name := range rpmFixtures {
		f.Add(rpmFixture(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := ParseRpmDB(context.Background(), bytes.NewReader(data), int64(len(data)), 1<<16)
		if err == nil {
			checkPackages(t, pkgs)
		}
	})
}

func FuzzParseRpmHeader(f *testing.F) {
	b := rpmFixture(f, "Packages.db")
	ndbRpmBlobs(context.Background(), bytes.NewReader(b), int64(len(b)), 1<<20, func(blob []byte) error {
		f.Add(blob)
		return nil
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := parseRpmHeader(data); err == nil {
			checkPackages(t, []Package{h.pkg()})
		}
	})
}

func FuzzReadLayer(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct{ name, body string }{
		{"etc/os-release", "ID=debian\nVERSION_ID=12\n"},
		{"var/lib/dpkg/status", "Package: a\nVersion: 1\n"},
		{"usr/.wh.gone", ""},
		{"opt/.wh..wh..opq", ""},
		{"app/node_modules/x/package.json", `{"name":"x","version":"1.0.0"}`},
		{"var/lib/rpm/Packages.db", string(rpmFixture(f, "Packages.db"))},
	} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.body))
	}
	tw.WriteHeader(&tar.Header{Name: "lib/apk/db/installed", Typeflag: tar.TypeLink, Linkname: "var/lib/dpkg/status"})
	tw.Close()
	f.Add(buf.Bytes())
	opts := Options{MaxLayerBytes: 1 << 20, MaxFileBytes: 1 << 16, MaxBinaryBytes: 1 << 18, MaxEntries: 1000, TempDir: f.TempDir()}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ReadLayer(context.Background(), bytes.NewReader(data), opts)
		if err != nil {
			return
		}
		for _, fl := range l.Files {
			if fl.Path == "" || path.Clean(fl.Path) != fl.Path || strings.HasPrefix(fl.Path, "/") || strings.HasPrefix(fl.Path, "../") {
				t.Fatalf("unclean path %q", fl.Path)
			}
			checkPackages(t, fl.Packages)
		}
		Merge([]*Layer{l, l})
	})
}
