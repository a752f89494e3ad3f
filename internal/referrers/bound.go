package referrers

import (
	"sort"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Limits on what the index keeps and the API serves of each referrer, so that
// a client that may push cannot make every reader of a subject's referrers
// pay for megabytes of annotations.
const (
	// MaxAnnotationBytes bounds the annotations (keys and values) copied
	// from a referrer manifest into its descriptor. Annotations are taken in
	// key order while they fit; the rest stay in the manifest itself.
	MaxAnnotationBytes = 4 << 10
	// maxPageDescriptors and maxPageBytes bound one referrers response; a
	// longer list continues on the page named by the Link header.
	maxPageDescriptors = 1000
	maxPageBytes       = 1 << 20
)

// boundAnnotations returns the annotations that fit in MaxAnnotationBytes,
// taken in key order (a key that does not fit is skipped, a shorter later
// one may still fit); a nil map when none is kept.
func boundAnnotations(a map[string]string) map[string]string {
	size := 0
	for k, v := range a {
		size += len(k) + len(v)
	}
	if size <= MaxAnnotationBytes {
		return a
	}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out map[string]string
	left := MaxAnnotationBytes
	for _, k := range keys {
		n := len(k) + len(a[k])
		if n > left {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = a[k]
		left -= n
	}
	return out
}

// bound returns desc with its annotations bounded.
func bound(desc v1.Descriptor) v1.Descriptor {
	desc.Annotations = boundAnnotations(desc.Annotations)
	return desc
}

// descriptorSize estimates the JSON size of a descriptor in a response.
func descriptorSize(d v1.Descriptor) int {
	n := 160 + len(d.MediaType) + len(d.ArtifactType) + len(d.Digest)
	for k, v := range d.Annotations {
		n += len(k) + len(v) + 6
	}
	return n
}
