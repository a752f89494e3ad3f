package api

import (
	"strings"

	"github.com/opencontainers/go-digest"

	pauth "github.com/portcullis/portcullis/auth"
)

// Prefix is where the API is mounted.
const Prefix = "/api/v1/"

// repositoriesPath is the prefix of the per-image routes:
// GET /api/v1/repositories/<name>/manifests/<digest>/<what>.
const repositoriesPath = Prefix + "repositories/"

// The documents an image has, the last segment of its routes.
const (
	WhatVerdict         = "verdict"
	WhatVulnerabilities = "vulnerabilities"
	WhatSBOM            = "sbom"
)

// ParsePath parses /api/v1/repositories/<name>/manifests/<digest>/<what>
// and returns its parts, or ok false. what is not checked.
func ParsePath(p string) (repo string, d digest.Digest, what string, ok bool) {
	rest, ok := strings.CutPrefix(p, repositoriesPath)
	if !ok {
		return "", "", "", false
	}
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		return "", "", "", false
	}
	rest, what = rest[:i], rest[i+1:]
	repo, d, ok = parseManifestPath(rest)
	return repo, d, what, ok
}

func parseManifestPath(rest string) (repo string, d digest.Digest, ok bool) {
	i := strings.LastIndex(rest, "/manifests/")
	if i <= 0 {
		return "", "", false
	}
	repo = rest[:i]
	if !pauth.ValidRepository(repo) {
		return "", "", false
	}
	d, err := digest.Parse(rest[i+len("/manifests/"):])
	if err != nil {
		return "", "", false
	}
	return repo, d, true
}
