// Package inventory lists the software packages in container image layers without extracting
// them to disk.
//
// Layer reads one uncompressed layer tar stream and keeps, per file that a package extractor
// understands, the packages found in it, together with the layer's whiteouts. Merge applies
// such layer inventories in order, as an overlay filesystem would, into the inventory of the
// image. Both results are plain JSON-serialisable values, so a layer is read once and its
// inventory stored under the layer's digest and reused by every image that shares it.
//
// Extractors: dpkg (var/lib/dpkg/status and status.d/*), apk (lib/apk/db/installed), rpm
// (rpmdb.sqlite, Packages or Packages.db in var/lib/rpm, usr/lib/sysimage/rpm or
// usr/share/rpm: sqlite, Berkeley DB and ndb databases, read without cgo or an SQL engine),
// Go binaries (debug/buildinfo), npm (package-lock.json and node_modules/*/package.json),
// Python (dist-info/METADATA, egg-info/PKG-INFO) and Java archives (pom.properties,
// MANIFEST.MF).
//
// OS packages get the OSV ecosystem of the image's distribution, release included, from
// its os-release (OSRelease.Ecosystem). For rpm that is "Red Hat:enterprise_linux:9" (RHEL:
// Red Hat names repository streams, "Red Hat:enterprise_linux:9::appstream", that the
// package database does not record), "Rocky Linux:9", "AlmaLinux:9", "SUSE:15 SP5"
// (SUSE files packages under the product or module that ships them, which os-release
// does not say either), "openSUSE:Leap 15.5", "openSUSE:Tumbleweed", "Mageia:9" or
// "openEuler:24.03-LTS-SP1"; rpm packages of other distributions (Fedora, CentOS, Amazon
// Linux, which OSV has no ecosystem for) get none. The scanner's database index maps the
// Red Hat and SUSE record ecosystems onto these release keys.
//
// Caveats: symlinks are recorded but never followed (os-release falls back from etc/ to
// usr/lib/); a file in a lower layer hidden because an upper layer replaced one of its parent
// directories by a file or symlink, without a whiteout, is still listed.
//
// The package does no network I/O, writes only temporary files in Options.TempDir, and must
// not import scan or vulndb.
package inventory

// FormatVersion is the version of the Layer format and of the extractors that fill it. A
// stored Layer with another version must be computed again. 3: apk packages on Wolfi and
// Chainguard get their distribution's ecosystem.
const FormatVersion = 3

// Package types: which extractor found a package.
const (
	TypeDpkg     = "dpkg"
	TypeApk      = "apk"
	TypeRpm      = "rpm"
	TypeGoBinary = "go-binary"
	TypeNpm      = "npm"
	TypePython   = "python"
	TypeJava     = "java"
)

// Ecosystems, as OSV names them. OS packages get their release appended by Merge.
const (
	EcosystemDebian = "Debian"
	EcosystemUbuntu = "Ubuntu"
	EcosystemAlpine = "Alpine"
	// Wolfi and Chainguard are apk distributions whose OSV ecosystems carry no release.
	EcosystemWolfi      = "Wolfi"
	EcosystemChainguard = "Chainguard"
	// rpm distributions. Red Hat and SUSE carry a release key of their own (see the package
	// documentation), the others their OSV release suffix.
	EcosystemRedHat     = "Red Hat"
	EcosystemRockyLinux = "Rocky Linux"
	EcosystemAlmaLinux  = "AlmaLinux"
	EcosystemSUSE       = "SUSE"
	EcosystemOpenSUSE   = "openSUSE"
	EcosystemMageia     = "Mageia"
	EcosystemOpenEuler  = "openEuler"
	EcosystemGo         = "Go"
	EcosystemNpm        = "npm"
	EcosystemPyPI       = "PyPI"
	EcosystemMaven      = "Maven"
)

// Package is one installed package.
type Package struct {
	// Name is the package name: the binary package for dpkg, apk and rpm, the module path
	// for Go ("stdlib" for the Go standard library), groupId:artifactId for Maven.
	Name string `json:"name"`
	// Version is the package's version; for rpm "[epoch:]version-release", the epoch only
	// when above zero.
	Version string `json:"version"`
	// SourceName and SourceVersion name the source package of a distribution package. They
	// are always set for dpkg, apk and rpm (for rpm from the source rpm's file name, which
	// carries no epoch). Debian and Alpine advisories name source packages; rpm ones
	// name binary packages.
	SourceName    string `json:"sourceName,omitempty"`
	SourceVersion string `json:"sourceVersion,omitempty"`
	// Ecosystem is the OSV ecosystem; in a Layer, dpkg and apk packages carry only the
	// distribution ("Debian") and rpm packages none, and Merge adds the distribution and
	// its release ("Debian:12", "Rocky Linux:9"). It stays empty for rpm packages of a
	// distribution without an OSV ecosystem.
	Ecosystem string `json:"ecosystem"`
	// Type is the extractor that found the package.
	Type string `json:"type"`
	// Location is the path of the file the package was found in, relative to the image root.
	Location string `json:"location"`
}

// OSRelease holds the fields of an os-release file that identify the distribution.
type OSRelease struct {
	ID              string `json:"id,omitempty"`
	VersionID       string `json:"versionID,omitempty"`
	VersionCodename string `json:"versionCodename,omitempty"`
	PrettyName      string `json:"prettyName,omitempty"`
}

// File is an extractor-relevant path in a layer.
type File struct {
	Path string `json:"path"`
	// Symlink is set when the entry is a symbolic link; nothing is read through it.
	Symlink bool `json:"symlink,omitempty"`
	// Packages found in the file (none is possible: the file still hides lower layers' file).
	Packages  []Package  `json:"packages,omitempty"`
	OSRelease *OSRelease `json:"osRelease,omitempty"`
}

// Layer is the inventory of one layer.
type Layer struct {
	Format int `json:"format"`
	// Files are the extractor-relevant files the layer adds or replaces, sorted by path.
	Files []File `json:"files,omitempty"`
	// Whiteouts are paths the layer deletes from lower layers (".wh.<name>" entries).
	Whiteouts []string `json:"whiteouts,omitempty"`
	// OpaqueDirs are directories whose lower-layer contents the layer hides (".wh..wh..opq").
	OpaqueDirs []string `json:"opaqueDirs,omitempty"`
}

// Image is the merged inventory of an image.
type Image struct {
	// OS is the distribution from etc/os-release (or usr/lib/os-release), nil when absent.
	OS *OSRelease `json:"os,omitempty"`
	// Packages are sorted by location, then ecosystem, name and version.
	Packages []Package `json:"packages"`
}
