package gc

import (
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	v2Root    = "/docker/registry/v2"
	reposRoot = v2Root + "/repositories"
	blobsRoot = v2Root + "/blobs"

	gcRoot         = "/portcullis/gc"
	leasePath      = gcRoot + "/lease"
	runPath        = gcRoot + "/run"
	replicasRoot   = gcRoot + "/replicas"
	acksRoot       = gcRoot + "/acks"
	marksRoot      = gcRoot + "/marks"
	tombstonesRoot = gcRoot + "/tombstones"
	reportsRoot    = gcRoot + "/reports"
	pullsRoot      = "/portcullis/pulls"
)

func blobDir(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(blobsRoot, string(d.Algorithm()), hex[:2], hex)
}

func blobData(d digest.Digest) string { return path.Join(blobDir(d), "data") }

func repoDir(repo string) string { return path.Join(reposRoot, repo) }

func revisionDir(repo string, d digest.Digest) string {
	return path.Join(repoDir(repo), "_manifests", "revisions", string(d.Algorithm()), d.Encoded())
}

func tagDir(repo, tag string) string { return path.Join(repoDir(repo), "_manifests", "tags", tag) }

func tagCurrent(repo, tag string) string { return path.Join(tagDir(repo, tag), "current", "link") }

func tagIndexDir(repo, tag string, d digest.Digest) string {
	return path.Join(tagDir(repo, tag), "index", string(d.Algorithm()), d.Encoded())
}

func layerDir(repo string, d digest.Digest) string {
	return path.Join(repoDir(repo), "_layers", string(d.Algorithm()), d.Encoded())
}

func referrerEntry(repo string, subject, referrer digest.Digest) string {
	return path.Join(repoDir(repo), "_referrers", "subjects", string(subject.Algorithm()), subject.Encoded(),
		string(referrer.Algorithm())+"-"+referrer.Encoded())
}

func referrerSubjectDir(repo string, subject digest.Digest) string {
	return path.Join(repoDir(repo), "_referrers", "subjects", string(subject.Algorithm()), subject.Encoded())
}

func markPath(d digest.Digest) string {
	return path.Join(marksRoot, string(d.Algorithm()), d.Encoded())
}

func blobTombstone(d digest.Digest) string {
	return path.Join(tombstonesRoot, "b", string(d.Algorithm()), d.Encoded())
}

func manifestTombstone(repo string, d digest.Digest) string {
	return path.Join(tombstonesRoot, "m", repo, string(d.Algorithm()), d.Encoded())
}

func pullPath(repo string, d digest.Digest) string {
	return path.Join(pullsRoot, repo, string(d.Algorithm()), d.Encoded())
}

// digestFrom reads the digest at the end of p, .../<alg>/<hex>[/<file>]:
// the two segments after skipping trailing file names.
func digestFrom(alg, hex string) (digest.Digest, bool) {
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	return d, d.Validate() == nil
}

// cosignTag reports whether tag is one of cosign's tags for a subject,
// sha256-<hex>.sig, .att or .sbom, and returns the subject's digest.
func cosignTag(tag string) (digest.Digest, bool) {
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		if rest, ok := strings.CutSuffix(tag, suffix); ok {
			alg, hex, ok := strings.Cut(rest, "-")
			if !ok {
				return "", false
			}
			return digestFrom(alg, hex)
		}
	}
	return "", false
}
