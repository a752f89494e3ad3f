package inventory

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadLayer(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "./", Typeflag: tar.TypeDir}, "")
	add(&tar.Header{Name: "./var/lib/dpkg/status.d/base", Mode: 0o644}, "Package: base-files\nVersion: 12.4\n")
	add(&tar.Header{Name: "./var/lib/dpkg/status.d/base.md5sums"}, "not parsed")
	add(&tar.Header{Name: "usr/lib/node_modules/@scope/pkg/package.json"}, `{"name":"@scope/pkg","version":"2.0.0"}`)
	add(&tar.Header{Name: "usr/lib/node_modules/@scope/pkg/lib/package.json"}, `{"name":"inner","version":"9"}`)
	// A second name of a package file where no extractor looks lists nothing again; a second
	// name where one does lists its packages there too.
	add(&tar.Header{Name: "usr/bin/pkg-link", Typeflag: tar.TypeLink, Linkname: "usr/lib/node_modules/@scope/pkg/package.json"}, "")
	add(&tar.Header{Name: "opt/node_modules/pkg/package.json", Typeflag: tar.TypeLink, Linkname: "usr/lib/node_modules/@scope/pkg/package.json"}, "")
	add(&tar.Header{Name: "usr/share/.wh.doc"}, "")
	add(&tar.Header{Name: "etc/.wh..wh..opq"}, "")
	add(&tar.Header{Name: "etc/.wh..wh.plnk"}, "")
	add(&tar.Header{Name: "usr/bin/script", Mode: 0o755}, "#!/bin/sh\n")
	// A later entry for the same path wins.
	add(&tar.Header{Name: "var/lib/dpkg/status.d/base"}, "Package: base-files\nVersion: 12.5\n")
	tw.Close()

	l, err := ReadLayer(t.Context(), &buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := &Layer{
		Format: FormatVersion,
		Files: []File{
			{Path: "opt/node_modules/pkg/package.json", Packages: []Package{{Name: "@scope/pkg", Version: "2.0.0", Ecosystem: "npm", Type: TypeNpm, Location: "opt/node_modules/pkg/package.json"}}},
			{Path: "usr/bin/script"},
			{Path: "usr/lib/node_modules/@scope/pkg/package.json", Packages: []Package{{Name: "@scope/pkg", Version: "2.0.0", Ecosystem: "npm", Type: TypeNpm, Location: "usr/lib/node_modules/@scope/pkg/package.json"}}},
			{Path: "var/lib/dpkg/status.d/base", Packages: []Package{{Name: "base-files", Version: "12.5", SourceName: "base-files", SourceVersion: "12.5", Ecosystem: "Debian", Type: TypeDpkg, Location: "var/lib/dpkg/status.d/base"}}},
		},
		Whiteouts:  []string{"usr/share/doc"},
		OpaqueDirs: []string{"etc"},
	}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReadLayerLimits(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := bytes.Repeat([]byte("Package: a\nVersion: 1\n\n"), 100)
	tw.WriteHeader(&tar.Header{Name: "var/lib/dpkg/status", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
	tw.Close()
	if _, err := ReadLayer(t.Context(), bytes.NewReader(buf.Bytes()), Options{MaxFileBytes: 100}); !errors.Is(err, ErrLimit) {
		t.Errorf("file limit: err = %v, want ErrLimit", err)
	}
	if _, err := ReadLayer(t.Context(), bytes.NewReader(buf.Bytes()), Options{MaxLayerBytes: 1024}); !errors.Is(err, ErrLimit) {
		t.Errorf("layer limit: err = %v, want ErrLimit", err)
	}
	if _, err := ReadLayer(t.Context(), bytes.NewReader(buf.Bytes()), Options{MaxLayerBytes: int64(buf.Len())}); err != nil {
		t.Errorf("exactly at the layer limit: %v", err)
	}
}

// TestReadLayerPackageLimit: hard links multiplying a package database, or databases too
// many, stop at Options.MaxPackages instead of growing the inventory without bound.
func TestReadLayerPackageLimit(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("Package: a\nVersion: 1\n\nPackage: b\nVersion: 1\n")
	tw.WriteHeader(&tar.Header{Name: "var/lib/dpkg/status", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
	for i := range 50 {
		// Links where no extractor looks add nothing; links at a package database's path do.
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("tmp/%d", i), Typeflag: tar.TypeLink, Linkname: "var/lib/dpkg/status"})
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("var/lib/dpkg/status.d/%d", i), Typeflag: tar.TypeLink, Linkname: "var/lib/dpkg/status"})
	}
	tw.Close()
	l, err := ReadLayer(t.Context(), bytes.NewReader(buf.Bytes()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 51 {
		t.Errorf("%d files, want 51 (the status file and its 50 names under status.d)", len(l.Files))
	}
	if _, err := ReadLayer(t.Context(), bytes.NewReader(buf.Bytes()), Options{MaxPackages: 100}); !errors.Is(err, ErrLimit) {
		t.Errorf("102 packages over a limit of 100: err = %v, want ErrLimit", err)
	}
}
