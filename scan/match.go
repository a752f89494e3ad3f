package scan

import (
	"cmp"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// Finding is one vulnerability affecting one package version.
type Finding struct {
	ID string `json:"id"`
	// Aliases are the record's aliases and upstream ids, sorted.
	Aliases   []string `json:"aliases,omitempty"`
	Ecosystem string   `json:"ecosystem"`
	Package   string   `json:"package"`
	Version   string   `json:"version"`
	// SourcePackage and SourceVersion are set when the package was matched by a source
	// package whose name or version differs from its own.
	SourcePackage string `json:"sourcePackage,omitempty"`
	SourceVersion string `json:"sourceVersion,omitempty"`
	// FixedVersion is the lowest fixed version above the installed one, "" if none is known.
	FixedVersion string     `json:"fixedVersion,omitempty"`
	Severity     osv.Rating `json:"severity"`
	Summary      string     `json:"summary,omitempty"`
	// Locations are the files the package was found in, sorted.
	Locations []string `json:"locations"`
}

// Match returns the findings for the packages of img in db, one per (ecosystem, package,
// version, vulnerability), sorted by ecosystem, package, version and id. Withdrawn records,
// packages without a version ("(devel)" Go main modules) and packages without an ecosystem
// (rpm packages of a distribution OSV does not cover) never match.
func Match(img *inventory.Image, db *vulndb.DB) []Finding {
	return matchWith(img, func(eco, name, version string) []hit { return lookupHits(db, eco, name, version) })
}

// hit is one record affecting one package version.
type hit struct {
	record *osv.Record
	fixed  string
	rating osv.Rating
}

// lookupHits returns the records of db that affect version of a package.
func lookupHits(db *vulndb.DB, eco, name, version string) []hit {
	var hits []hit
	for _, e := range db.Lookup(eco, name) {
		if m := e.Affected.Affects(eco, version); m.Affected {
			hits = append(hits, hit{record: e.Record, fixed: m.Fixed, rating: e.Record.Rate()})
		}
	}
	return hits
}

// matchWith is Match with the look-up of the records affecting a (source) package version
// given as a function.
func matchWith(img *inventory.Image, lookup func(eco, name, version string) []hit) []Finding {
	found := map[findingKey]*Finding{}
	for _, pkg := range img.Packages {
		for _, mk := range matchKeys(pkg) {
			matchOne(found, pkg, mk.name, mk.version, lookup)
		}
	}
	out := make([]Finding, 0, len(found))
	for _, f := range found {
		slices.Sort(f.Locations)
		out = append(out, *f)
	}
	slices.SortFunc(out, compareFindings)
	return out
}

type findingKey struct{ eco, name, version, id string }

// matchOne adds to found the findings of pkg's records looked up by name and version; a
// record found before, by another name of the package, is not added twice.
func matchOne(found map[findingKey]*Finding, pkg inventory.Package, name, version string, lookup func(eco, name, version string) []hit) {
	if version == "" || version == "(devel)" || pkg.Ecosystem == "" {
		return
	}
	for _, h := range lookup(pkg.Ecosystem, name, version) {
		k := findingKey{pkg.Ecosystem, pkg.Name, pkg.Version, h.record.ID}
		f := found[k]
		if f == nil {
			f = &Finding{
				ID:           h.record.ID,
				Aliases:      aliases(h.record),
				Ecosystem:    pkg.Ecosystem,
				Package:      pkg.Name,
				Version:      pkg.Version,
				FixedVersion: h.fixed,
				Severity:     h.rating,
				Summary:      h.record.Summary,
			}
			if pkg.Type != inventory.TypeRpm && (name != pkg.Name || version != pkg.Version) {
				f.SourcePackage, f.SourceVersion = name, version
			}
			found[k] = f
		}
		if !slices.Contains(f.Locations, pkg.Location) {
			f.Locations = append(f.Locations, pkg.Location)
		}
	}
}

// needed lists the packages, by ecosystem and name, that matching img looks up (see
// vulndb.DB.Need).
func needed(img *inventory.Image) []osv.Package {
	seen := make(map[osv.Package]bool)
	var out []osv.Package
	for _, pkg := range img.Packages {
		if pkg.Ecosystem == "" {
			continue
		}
		for _, mk := range matchKeys(pkg) {
			p := osv.Package{Ecosystem: pkg.Ecosystem, Name: mk.name}
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

type matchName struct{ name, version string }

// matchKeys are the package names and versions that records are looked up and compared
// with. Debian, Ubuntu and Alpine records name source packages, so dpkg and apk packages are
// matched by their source package and version. Wolfi and Chainguard file records under the
// package that ships a component, a subpackage as often as its origin, so their packages
// are matched by their own name and by their origin. rpm records (Red Hat, AlmaLinux, Rocky
// Linux, SUSE, openSUSE) name binary packages, so rpm packages are matched by their own
// name; the version keeps its epoch only in the ecosystems whose records write epochs (Red
// Hat, AlmaLinux, Rocky Linux: "1:3.0.7-28.el9"), and drops it for the others, whose
// records write none, as osv-scanner does.
func matchKeys(pkg inventory.Package) []matchName {
	switch pkg.Type {
	case inventory.TypeDpkg, inventory.TypeApk:
		source := matchName{cmp.Or(pkg.SourceName, pkg.Name), cmp.Or(pkg.SourceVersion, pkg.Version)}
		if base := vulndb.Base(pkg.Ecosystem); (base == inventory.EcosystemWolfi || base == inventory.EcosystemChainguard) && source.name != pkg.Name {
			return []matchName{{pkg.Name, pkg.Version}, source}
		}
		return []matchName{source}
	case inventory.TypeRpm:
		switch vulndb.Base(pkg.Ecosystem) {
		case inventory.EcosystemRedHat, inventory.EcosystemAlmaLinux, inventory.EcosystemRockyLinux:
			return []matchName{{pkg.Name, pkg.Version}}
		}
		_, vr, ok := strings.Cut(pkg.Version, ":")
		if !ok {
			vr = pkg.Version
		}
		return []matchName{{pkg.Name, vr}}
	}
	return []matchName{{pkg.Name, pkg.Version}}
}

func compareFindings(a, b Finding) int {
	return cmp.Or(
		strings.Compare(a.Ecosystem, b.Ecosystem),
		strings.Compare(a.Package, b.Package),
		strings.Compare(a.Version, b.Version),
		strings.Compare(a.ID, b.ID),
	)
}

func aliases(r *osv.Record) []string {
	if len(r.Aliases)+len(r.Upstream) == 0 {
		return nil
	}
	out := slices.Concat(r.Aliases, r.Upstream)
	slices.Sort(out)
	return slices.Compact(out)
}
