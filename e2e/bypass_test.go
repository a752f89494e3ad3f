package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestEnforceBypasses: in an enforce repository a tag can point only at
// signed content, whatever the manifest carries or the tag looks like: an
// unsigned runnable image with a made-up subject, or pushed under a tag
// shaped like cosign's attestation tag, is refused; the same image with a
// subject pushed by digest is accepted, as signatures and SBOMs are.
func TestEnforceBypasses(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	s := newSigners(t)
	reg := startRegistry(t, startOptions{config: "version: 1\n" + s.trustConfig("enforce")})
	h := reg.Addr

	img, _ := random.Image(1024, 1)
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	d := imageDigest(t, img)
	attTag := "sha256-" + strings.TrimPrefix(d, "sha256:") + ".att"
	out, err := runErr(nil, crane, "push", "--insecure", tarPath, h+"/guarded/app:"+attTag)
	if err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("an unsigned image under %s: %v\n%s", attTag, err, out)
	}
	if out, err := runErr(nil, crane, "manifest", "--insecure", h+"/guarded/app:"+attTag); err == nil {
		t.Errorf("the refused tag exists: %s", out)
	}

	other, _ := random.Image(512, 1)
	od, _ := other.Digest()
	subjected, ok := mutate.Subject(img, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: od, Size: 100}).(v1.Image)
	if !ok {
		t.Fatal("mutate.Subject did not return an image")
	}
	err = remote.Write(ref(t, h+"/guarded/app:with-subject"), subjected)
	if err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("an unsigned image with a made-up subject pushed to a tag: %v", err)
	}
	if out, err := runErr(nil, crane, "manifest", "--insecure", h+"/guarded/app:with-subject"); err == nil {
		t.Errorf("the refused tag exists: %s", out)
	}
	sd, _ := subjected.Digest()
	if err := remote.Write(ref(t, h+"/guarded/app@"+sd.String()), subjected); err != nil {
		t.Errorf("a manifest with a subject pushed by digest: %v", err)
	}
}
