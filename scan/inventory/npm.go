package inventory

import (
	"encoding/json"
	"fmt"
	"strings"
)

type lockPackage struct {
	Name         string                 `json:"name"`
	Version      string                 `json:"version"`
	Link         bool                   `json:"link"`
	Dependencies map[string]lockPackage `json:"dependencies"`
}

// ParsePackageLock reads an npm package-lock.json (or node_modules/.package-lock.json):
// the "packages" map of lockfile versions 2 and 3, else the nested "dependencies" of version
// 1. Links, the root project and versions that are not registry versions (file:, git+...)
// are skipped. Invalid JSON fails with ErrMalformed.
func ParsePackageLock(data []byte) ([]Package, error) {
	var lock struct {
		Packages     map[string]json.RawMessage `json:"packages"`
		Dependencies map[string]json.RawMessage `json:"dependencies"`
	}
	if err := json.Unmarshal(data, &lock); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var pkgs []Package
	add := func(name, version string) {
		if name == "" || version == "" || strings.ContainsAny(version, ":/") {
			return
		}
		pkgs = append(pkgs, Package{Name: name, Version: version, Ecosystem: EcosystemNpm, Type: TypeNpm})
	}
	if len(lock.Packages) > 0 {
		for key, raw := range lock.Packages {
			var p lockPackage
			if json.Unmarshal(raw, &p) != nil || key == "" || p.Link {
				continue
			}
			name := p.Name
			if i := strings.LastIndex(key, "node_modules/"); i >= 0 {
				name = key[i+len("node_modules/"):]
			}
			add(name, p.Version)
		}
		return pkgs, nil
	}
	var walk func(deps map[string]json.RawMessage, depth int)
	walk = func(deps map[string]json.RawMessage, depth int) {
		if depth > 64 {
			return
		}
		for name, raw := range deps {
			var p struct {
				Version      string                     `json:"version"`
				Dependencies map[string]json.RawMessage `json:"dependencies"`
			}
			if json.Unmarshal(raw, &p) != nil {
				continue
			}
			add(name, p.Version)
			walk(p.Dependencies, depth+1)
		}
	}
	walk(lock.Dependencies, 0)
	return pkgs, nil
}

// ParseNodePackage reads node_modules/<name>/package.json and returns the package it
// describes, or nothing when the file is not valid JSON or lacks a name or version.
func ParseNodePackage(data []byte) []Package {
	var p struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if json.Unmarshal(data, &p) != nil || p.Name == "" || p.Version == "" {
		return nil
	}
	return []Package{{Name: p.Name, Version: p.Version, Ecosystem: EcosystemNpm, Type: TypeNpm}}
}
