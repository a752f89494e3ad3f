package trust_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/trust"
)

const bundleV03 = "application/vnd.dev.sigstore.bundle.v0.3+json"

// countingContent counts the signature blobs a verification reads.
type countingContent struct {
	*memContent
	blobs int
}

func (c *countingContent) Blob(ctx context.Context, repo string, d digest.Digest, max int64) ([]byte, error) {
	c.blobs++
	return c.memContent.Blob(ctx, repo, d, max)
}

// sortReferrers orders the referrers by digest, as the registry's index does.
func sortReferrers(c *memContent, subject digest.Digest) {
	slices.SortFunc(c.referrers[subject], func(a, b v1.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
}

// TestJunkSignatures: junk bundles pushed next to a real signature, more
// of them than one verification checks and sorted ahead of it, cost each
// verification a bounded number of reads; the real signature is found by
// the verifications that follow and, once found, more junk does not hide it.
func TestJunkSignatures(t *testing.T) {
	t.Parallel()
	bundle := realBundle(t)
	mem := newMemContent()
	target := seedTarget(t, mem)
	attach(mem, target, bundleV03, bundleV03, bundle)
	real := mem.referrers[target.Digest][0].Digest
	junk := func(n int) {
		ahead := 0
		for i := 0; ahead < n; i++ {
			attach(mem, target, bundleV03, bundleV03, fmt.Appendf(nil, `{"mediaType":%q,"junk":%d,"pad":%q}`, bundleType, i, strings.Repeat("x", 64)))
			if d := mem.referrers[target.Digest][len(mem.referrers[target.Digest])-1].Digest; d < real {
				ahead++
			}
		}
		sortReferrers(mem, target.Digest)
	}
	junk(150)
	c := &countingContent{memContent: mem}
	v := seedVerifier(t, c)

	checks, trusted := 0, false
	for ; checks < 10 && !trusted; checks++ {
		c.blobs = 0
		verdict := check(t, v, target)
		if c.blobs > 64 {
			t.Fatalf("check %d read %d signature blobs, want at most 64", checks, c.blobs)
		}
		trusted = verdict.Trusted
		if !trusted && verdict.Unexamined == 0 {
			t.Fatalf("untrusted with every signature examined: %s", dump(verdict))
		}
	}
	if !trusted {
		t.Fatalf("the real signature was not found in %d checks", checks)
	}
	if checks < 2 {
		t.Errorf("trusted at the first check: the junk did not fill the first check's budget")
	}

	junk(300)
	c.blobs = 0
	verdict := check(t, v, target)
	if !verdict.Trusted {
		t.Errorf("more junk hid a signature already found: %s", dump(verdict))
	}
	if c.blobs > 64 {
		t.Errorf("read %d signature blobs, want at most 64", c.blobs)
	}
}

// TestAttestationsAreNotSignatures: a bundle referrer that declares another
// predicate than cosign's signature is not examined, and alone it does not
// make an image signed.
func TestAttestationsAreNotSignatures(t *testing.T) {
	t.Parallel()
	mem := newMemContent()
	target := seedTarget(t, mem)
	for i := range 100 {
		attach(mem, target, bundleV03, bundleV03, fmt.Appendf(nil, `{"attestation":%d}`, i))
		refs := mem.referrers[target.Digest]
		refs[len(refs)-1].Annotations = map[string]string{"dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1"}
	}
	c := &countingContent{memContent: mem}
	v := seedVerifier(t, c)
	verdict := check(t, v, target)
	if verdict.Signed || len(verdict.Signatures) != 0 || c.blobs != 0 {
		t.Errorf("attestations: signed %v, %d signatures, %d blobs read", verdict.Signed, len(verdict.Signatures), c.blobs)
	}
	attach(mem, target, bundleV03, bundleV03, realBundle(t))
	if verdict := check(t, v, target); !verdict.Trusted || len(verdict.Signatures) != 1 {
		t.Errorf("with the real signature: %s", dump(verdict))
	}
}

// realBundle is the cosign bundle in testdata that signs target.json.
func realBundle(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzBundle", "real"))
	if err != nil {
		t.Fatal(err)
	}
	var bundle []byte
	if err := unquoteCorpus(data, &bundle); err != nil {
		t.Fatal(err)
	}
	return bundle
}

var _ trust.Content = (*countingContent)(nil)
