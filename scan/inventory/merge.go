package inventory

import (
	"cmp"
	"slices"
	"strings"
)

// Merge applies layer inventories in order, lowest first, as an overlay filesystem does: a
// layer's whiteouts and opaque directories hide the files of the layers below it, then its
// own files replace those at the same paths. OS packages get their ecosystem's release from
// the resulting os-release: etc/os-release, or usr/lib/os-release when the former is absent
// or a symlink. rpm packages get the ecosystem of the image's distribution when it is an
// rpm distribution OSV knows, else none.
func Merge(layers []*Layer) *Image {
	files := make(map[string]*File)
	hide := func(p string) {
		delete(files, p)
		prefix := p + "/"
		for q := range files {
			if strings.HasPrefix(q, prefix) {
				delete(files, q)
			}
		}
	}
	for _, l := range layers {
		for _, d := range l.OpaqueDirs {
			prefix := d + "/"
			for q := range files {
				if strings.HasPrefix(q, prefix) {
					delete(files, q)
				}
			}
		}
		for _, w := range l.Whiteouts {
			hide(w)
		}
		for i := range l.Files {
			files[l.Files[i].Path] = &l.Files[i]
		}
	}

	img := &Image{Packages: []Package{}}
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if f, ok := files[p]; ok && !f.Symlink && f.OSRelease != nil {
			img.OS = f.OSRelease
			break
		}
	}
	osEcosystem := img.OS.Ecosystem()
	for _, f := range files {
		for _, pkg := range f.Packages {
			switch pkg.Type {
			case TypeDpkg, TypeApk:
				pkg.Ecosystem = osPackageEcosystem(pkg.Ecosystem, osEcosystem)
			case TypeRpm:
				pkg.Ecosystem = ""
				if IsRpmEcosystem(osEcosystem) {
					pkg.Ecosystem = osEcosystem
				}
			}
			img.Packages = append(img.Packages, pkg)
		}
	}
	slices.SortFunc(img.Packages, func(a, b Package) int {
		return cmp.Or(
			strings.Compare(a.Location, b.Location),
			strings.Compare(a.Ecosystem, b.Ecosystem),
			strings.Compare(a.Name, b.Name),
			strings.Compare(a.Version, b.Version),
		)
	})
	return img
}

// osPackageEcosystem gives a dpkg or apk package the release of the image's distribution when
// the distribution is the package's own (dpkg on Debian or Ubuntu, apk on Alpine, Wolfi or
// Chainguard, whose packages are matched against that distribution's records only).
func osPackageEcosystem(pkgEco, osEco string) string {
	base, _, _ := strings.Cut(osEco, ":")
	switch {
	case base == pkgEco:
		return osEco
	case pkgEco == EcosystemDebian && base == EcosystemUbuntu:
		return osEco
	case pkgEco == EcosystemAlpine && (base == EcosystemWolfi || base == EcosystemChainguard):
		return osEco
	}
	return pkgEco
}
