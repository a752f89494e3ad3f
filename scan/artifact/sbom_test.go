package artifact

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/scan/inventory"
)

func zipBytes(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[n]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPackageURL(t *testing.T) {
	t.Parallel()
	debian := &inventory.OSRelease{ID: "debian", VersionID: "12"}
	alpine := &inventory.OSRelease{ID: "alpine", VersionID: "3.20.3"}
	tests := []struct {
		name string
		pkg  inventory.Package
		os   *inventory.OSRelease
		want string
	}{
		{"deb", inventory.Package{Name: "perl-base", Version: "5.36.0-7+deb12u1", Type: inventory.TypeDpkg}, debian, "pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u1?distro=debian-12"},
		{"deb epoch", inventory.Package{Name: "libc6", Version: "1:2.36-9", Type: inventory.TypeDpkg}, debian, "pkg:deb/debian/libc6@1%3A2.36-9?distro=debian-12"},
		{"deb on ubuntu", inventory.Package{Name: "bash", Version: "5.1", Type: inventory.TypeDpkg}, &inventory.OSRelease{ID: "ubuntu", VersionID: "22.04"}, "pkg:deb/ubuntu/bash@5.1?distro=ubuntu-22.04"},
		{"deb without os-release", inventory.Package{Name: "bash", Version: "5.1", Type: inventory.TypeDpkg}, nil, "pkg:deb/debian/bash@5.1"},
		{"apk", inventory.Package{Name: "libssl3", Version: "3.3.1-r0", Type: inventory.TypeApk}, alpine, "pkg:apk/alpine/libssl3@3.3.1-r0?distro=alpine-3.20.3"},
		{"go module", inventory.Package{Name: "golang.org/x/text", Version: "0.3.5", Type: inventory.TypeGoBinary}, nil, "pkg:golang/golang.org/x/text@v0.3.5"},
		{"go stdlib", inventory.Package{Name: "stdlib", Version: "1.26.5", Type: inventory.TypeGoBinary}, nil, "pkg:golang/stdlib@v1.26.5"},
		{"go devel", inventory.Package{Name: "example.com/app", Version: "(devel)", Type: inventory.TypeGoBinary}, nil, "pkg:golang/example.com/app"},
		{"npm", inventory.Package{Name: "lodash", Version: "4.17.20", Type: inventory.TypeNpm}, nil, "pkg:npm/lodash@4.17.20"},
		{"npm scoped", inventory.Package{Name: "@babel/core", Version: "7.0.0", Type: inventory.TypeNpm}, nil, "pkg:npm/%40babel/core@7.0.0"},
		{"pypi", inventory.Package{Name: "Foo_Bar", Version: "1.0", Type: inventory.TypePython}, nil, "pkg:pypi/foo-bar@1.0"},
		{"maven", inventory.Package{Name: "org.apache.logging.log4j:log4j-core", Version: "2.14.1", Type: inventory.TypeJava}, nil, "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"},
		{"maven without group", inventory.Package{Name: "log4j-core", Version: "2.14.1", Type: inventory.TypeJava}, nil, "pkg:maven/log4j-core@2.14.1"},
		{"rpm", inventory.Package{Name: "bash", Version: "5.1.8-6.el9", Type: inventory.TypeRpm}, &inventory.OSRelease{ID: "rocky", VersionID: "9.2"}, "pkg:rpm/rocky/bash@5.1.8-6.el9?distro=rocky-9.2"},
		{"rpm epoch", inventory.Package{Name: "openssl-libs", Version: "1:3.0.7-27.el9", Type: inventory.TypeRpm}, &inventory.OSRelease{ID: "rhel", VersionID: "9.2"}, "pkg:rpm/rhel/openssl-libs@3.0.7-27.el9?distro=rhel-9.2&epoch=1"},
		{"rpm without os-release", inventory.Package{Name: "bash", Version: "5.1.8-6.el9", Type: inventory.TypeRpm}, nil, "pkg:rpm/bash@5.1.8-6.el9"},
		{"unknown type", inventory.Package{Name: "x", Version: "1", Type: "cargo"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PackageURL(tt.pkg, tt.os); got != tt.want {
				t.Errorf("PackageURL = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSBOM(t *testing.T) {
	t.Parallel()
	stored, _, subject := scanned(t)
	when := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	doc, err := SBOM(stored, when)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := SBOM(stored, when)
	if !bytes.Equal(doc, again) {
		t.Error("SBOM is not deterministic")
	}
	var raw map[string]any
	if err := json.Unmarshal(doc, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["bomFormat"] != "CycloneDX" || raw["specVersion"] != "1.5" {
		t.Errorf("header: %v %v", raw["bomFormat"], raw["specVersion"])
	}
	bom, err := ParseSBOM(doc)
	if err != nil {
		t.Fatal(err)
	}
	if bom.Metadata.Component == nil || bom.Metadata.Component.Type != "container" || bom.Metadata.Component.Name != subject.Digest.String() {
		t.Errorf("metadata component %+v", bom.Metadata.Component)
	}
	var purls []string
	refs := map[string]bool{}
	for _, c := range bom.Components {
		if refs[c.BOMRef] {
			t.Errorf("bom-ref %q repeats", c.BOMRef)
		}
		refs[c.BOMRef] = true
		if c.Type == "operating-system" {
			if c.Name != "debian" || c.Version != "12" {
				t.Errorf("os component %+v", c)
			}
			continue
		}
		purls = append(purls, c.PURL)
		if c.Evidence == nil || len(c.Evidence.Occurrences) == 0 {
			t.Errorf("%s has no occurrence", c.PURL)
		}
	}
	for _, want := range []string{
		"pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u1?distro=debian-12",
		"pkg:deb/debian/libpcre2-8-0@10.42-1?distro=debian-12",
		"pkg:npm/%40scope/pkg@1.0.0%2Bbuild",
		"pkg:pypi/foo-bar@1.0",
	} {
		if !slices.Contains(purls, want) {
			t.Errorf("SBOM lacks %s; has %v", want, purls)
		}
	}
	if !slices.IsSorted(purls) || len(purls) != len(stored.Inventory.Packages) {
		t.Errorf("purls (%d for %d packages) not sorted: %v", len(purls), len(stored.Inventory.Packages), purls)
	}

	a, err := SBOMArtifact(subject, doc, when)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := ParseManifest(a.Manifest)
	if m.ArtifactType != ArtifactTypeSBOM || m.Layers[0].MediaType != MediaTypeSBOM || m.Subject.Digest != subject.Digest {
		t.Errorf("manifest %s", a.Manifest)
	}
	var s store
	s.push(t, a)
	gotDoc, gotBOM, _, err := ReadSBOM(t.Context(), s.fetch, a.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotDoc, doc) {
		t.Error("SBOM document changed on the way")
	}
	if diff := cmp.Diff(bom, gotBOM); diff != "" {
		t.Errorf("decoded SBOM (-want +got):\n%s", diff)
	}

	for _, bad := range []string{`{}`, `{"bomFormat":"SPDX","specVersion":"1.5"}`, `{"bomFormat":"CycloneDX","specVersion":"2.0"}`, `[`} {
		if _, err := SBOMArtifact(subject, []byte(bad), when); !errors.Is(err, ErrInvalidArtifact) {
			t.Errorf("SBOMArtifact(%s): %v", bad, err)
		}
	}
}
