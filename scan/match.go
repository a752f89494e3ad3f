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
// version, vulnerability), sorted by ecosystem, package, version and id. Withdrawn records
// and packages without a version ("(devel)" Go main modules) never match.
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
	type key struct{ eco, name, version, id string }
	found := map[key]*Finding{}
	for _, pkg := range img.Packages {
		name, version := pkg.Name, pkg.Version
		if pkg.Type == inventory.TypeDpkg || pkg.Type == inventory.TypeApk {
			name = cmp.Or(pkg.SourceName, name)
			version = cmp.Or(pkg.SourceVersion, version)
		}
		if version == "" || version == "(devel)" {
			continue
		}
		for _, h := range lookup(pkg.Ecosystem, name, version) {
			k := key{pkg.Ecosystem, pkg.Name, pkg.Version, h.record.ID}
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
				if name != pkg.Name || version != pkg.Version {
					f.SourcePackage, f.SourceVersion = name, version
				}
				found[k] = f
			}
			if !slices.Contains(f.Locations, pkg.Location) {
				f.Locations = append(f.Locations, pkg.Location)
			}
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
