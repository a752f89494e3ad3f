package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// root is where distribution's layout starts, in the filesystem root
// directory and in the bucket alike (registry/storage/paths.go).
const root = "docker/registry/v2"

// The state a seeded manifest is left in; the index of a manifest modulo 4
// picks it, so that half of them are garbage.
const (
	tagged    = iota // a tag points at it: live, with what it refers to
	taggedToo        // tagged as well: half of the manifests are live
	untagged         // its revision link is there but no tag points at it any more
	deleted          // deleted by digest: its revision link is gone, its blobs are left
)

// dataset is the content both collectors get: manifests in repositories
// with their configs and layers, some layers shared between manifests of
// different repositories. It is made from its parameters alone, so the
// same dataset can be written twice.
type dataset struct {
	repos     []string
	manifests []manifest
	blobs     [][]byte // configs and layers, not the manifests
	tagged    []int    // indexes into manifests of the tagged ones
	// perRepo is how many consecutive manifests share a repository.
	perRepo int
}

// manifest is one OCI image manifest of the dataset.
type manifest struct {
	repo    string
	tag     string // "" when not tagged
	state   int
	config  int   // index into blobs
	layers  []int // indexes into blobs
	content []byte
	digest  digest.Digest
}

// newDataset lays out n manifests over m blobs (configs and layers), perRepo
// manifests to a repository. Every manifest has its own config; a tenth of
// the blobs are layers shared by manifests all over the registry, the rest
// are layers of one manifest each. Shared layers that no manifest happens
// to pick stand for blobs whose manifests are long gone.
func newDataset(n, m, perRepo int) (*dataset, error) {
	shared := m / 10
	if n < 4 || perRepo < 4 || perRepo%4 != 0 || m < n+shared+n {
		return nil, fmt.Errorf("want at least 4 manifests, a multiple of 4 a repository, and blobs ≥ 2.1 × manifests (got %d manifests, %d blobs, %d a repository)", n, m, perRepo)
	}
	d := &dataset{perRepo: perRepo, blobs: make([][]byte, m)}
	for i := range n {
		d.blobs[i] = configBlob(i)
	}
	for i := n; i < m; i++ {
		d.blobs[i] = layerBlob(i)
	}
	unique := m - n - shared
	for i := range n {
		if i%perRepo == 0 {
			d.repos = append(d.repos, fmt.Sprintf("bench/r%05d", i/perRepo))
		}
		mf := manifest{repo: d.repos[len(d.repos)-1], state: i % 4, config: i}
		// One shared layer first, picked all over the registry (a
		// multiplicative hash spreads the picks), then this manifest's own.
		mf.layers = append(mf.layers, n+int((uint64(i)*2654435761)%uint64(shared)))
		for l := n + shared + i*unique/n; l < n+shared+(i+1)*unique/n; l++ {
			mf.layers = append(mf.layers, l)
		}
		if mf.state == tagged || mf.state == taggedToo {
			mf.tag = fmt.Sprintf("t%d", i)
			d.tagged = append(d.tagged, i)
		}
		content, err := d.imageManifest(mf.config, mf.layers, nil)
		if err != nil {
			return nil, err
		}
		mf.content, mf.digest = content, digest.FromBytes(content)
		d.manifests = append(d.manifests, mf)
	}
	return d, nil
}

// configBlob is a small image config, different for each i.
func configBlob(i int) []byte {
	return fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{"bench.gc":"%d"}}}`, i)
}

// layerBlob is 256 to 2 KiB of bytes that only blob i has; what the
// bytes are does not matter to a collector.
func layerBlob(i int) []byte {
	size := 256 + (i*7919)%1792
	b := make([]byte, 0, size+sha256.Size)
	seed := sha256.Sum256(fmt.Appendf(nil, "gc bench layer %d", i))
	for len(b) < size {
		b = append(b, seed[:]...)
		seed = sha256.Sum256(seed[:])
	}
	return b[:size]
}

// imageManifest is the OCI image manifest of a config and layers, with
// annotations when they are not nil.
func (d *dataset) imageManifest(config int, layers []int, annotations map[string]string) ([]byte, error) {
	m := ocispec.Manifest{
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      d.descriptor(ocispec.MediaTypeImageConfig, config),
		Annotations: annotations,
	}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, d.descriptor(ocispec.MediaTypeImageLayerGzip, l))
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return b, nil
}

func (d *dataset) descriptor(mediaType string, blob int) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(d.blobs[blob]), Size: int64(len(d.blobs[blob]))}
}

// object is one file (filesystem) or object (S3) of the dataset, its path
// relative to the storage root.
type object struct {
	key  string
	data []byte
}

// objects calls put for every file of the dataset in distribution's
// layout, as distribution itself would have left them: blob data once
// each, and per repository the layer links, revision links and tags. It
// stops at the first error put returns.
func (d *dataset) objects(put func(object) error) error {
	for i, b := range d.blobs {
		if err := put(object{blobData(digest.FromBytes(b)), b}); err != nil {
			return fmt.Errorf("blob %d: %w", i, err)
		}
	}
	linked := map[string]bool{} // repo + digest: a layer link written
	for i, m := range d.manifests {
		var objs []object
		objs = append(objs, object{blobData(m.digest), m.content})
		for _, b := range append([]int{m.config}, m.layers...) {
			dg := digest.FromBytes(d.blobs[b])
			if !linked[m.repo+string(dg)] {
				linked[m.repo+string(dg)] = true
				objs = append(objs, object{path.Join(repoDir(m.repo), "_layers", "sha256", dg.Encoded(), "link"), []byte(dg)})
			}
		}
		switch m.state {
		case tagged, taggedToo:
			objs = append(objs,
				object{revisionLink(m.repo, m.digest), []byte(m.digest)},
				object{path.Join(tagDir(m.repo, m.tag), "current", "link"), []byte(m.digest)},
				object{tagIndexLink(m.repo, m.tag, m.digest), []byte(m.digest)})
		case untagged:
			// The tag of the manifest two before (tagged, in the same
			// repository) once pointed here, as when a tag moves.
			prev := d.manifests[i-2]
			objs = append(objs,
				object{revisionLink(m.repo, m.digest), []byte(m.digest)},
				object{tagIndexLink(prev.repo, prev.tag, m.digest), []byte(m.digest)})
		case deleted:
			// distribution's manifest DELETE removes the revision link
			// and leaves the blobs to the collector.
		}
		for _, o := range objs {
			if err := put(o); err != nil {
				return fmt.Errorf("manifest %d: %w", i, err)
			}
		}
	}
	return nil
}

// count returns how many objects objects writes.
func (d *dataset) count() int {
	n := 0
	_ = d.objects(func(object) error { n++; return nil })
	return n
}

// live returns the blobs (manifests included) a correct collector keeps:
// the tagged manifests and everything they refer to.
func (d *dataset) live() map[digest.Digest]bool {
	keep := map[digest.Digest]bool{}
	for _, m := range d.manifests {
		if m.tag == "" {
			continue
		}
		keep[m.digest] = true
		for _, b := range append([]int{m.config}, m.layers...) {
			keep[digest.FromBytes(d.blobs[b])] = true
		}
	}
	return keep
}

// liveManifests is how many manifests a correct collector keeps.
func (d *dataset) liveManifests() int {
	n := 0
	for _, m := range d.manifests {
		if m.tag != "" {
			n++
		}
	}
	return n
}

func blobData(d digest.Digest) string {
	return path.Join(root, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

func repoDir(repo string) string { return path.Join(root, "repositories", repo) }

func revisionLink(repo string, d digest.Digest) string {
	return path.Join(repoDir(repo), "_manifests", "revisions", "sha256", d.Encoded(), "link")
}

func tagDir(repo, tag string) string { return path.Join(repoDir(repo), "_manifests", "tags", tag) }

func tagIndexLink(repo, tag string, d digest.Digest) string {
	return path.Join(tagDir(repo, tag), "index", "sha256", d.Encoded(), "link")
}

// blobKey reads the digest out of the key of a blob's data, relative to the
// storage root; ok is false for any other key.
func blobKey(key string) (d digest.Digest, ok bool) {
	rest, ok := strings.CutPrefix(key, root+"/blobs/sha256/")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "data" {
		return "", false
	}
	d = digest.NewDigestFromEncoded(digest.SHA256, parts[1])
	return d, d.Validate() == nil
}

// isRevisionLink reports whether key, relative to the storage root, is a
// manifest revision link.
func isRevisionLink(key string) bool {
	return strings.HasPrefix(key, root+"/repositories/") && strings.Contains(key, "/_manifests/revisions/") && strings.HasSuffix(key, "/link")
}
