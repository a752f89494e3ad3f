// Package digests lets clients address content by a digest algorithm other
// than the canonical sha256 (sha512 today) and see that digest in every
// response, as the OCI distribution spec requires.
//
// distribution stores every blob and manifest under its sha256 digest. For a
// non-canonical digest it keeps an alias link in the repository that points
// at the canonical one, in its own layout:
//
//	/docker/registry/v2/repositories/<name>/
//	├── _layers/<alg>/<hex>/link                 blob link, content "sha256:…"
//	└── _manifests/revisions/<alg>/<hex>/link    manifest link, content "sha256:…"
//
// distribution already writes the blob alias when an upload is committed with
// a sha512 digest; this package writes the aliases distribution misses
// (cross-repository mounts and manifests pushed by sha512) and rewrites
// descriptors and headers so that the client's digest comes back.
package digests
