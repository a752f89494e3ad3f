package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
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

	img, tarPath := imageTarball(t)
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

// TestCatalogAndReservedRepository: the catalog lists only the
// repositories the caller may pull and never the registry's vulnerability
// database, which no client may write or delete, whatever the rules say.
func TestCatalogAndReservedRepository(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	cfg := "version: 1\n" + usersAliceAndBob(t, `    - name: alice-team
      subjects: [user:alice]
      repositories: ["team/**"]
      actions: ["*"]
    - name: bob-everything
      subjects: [user:bob]
      repositories: ["**"]
      actions: ["*"]
    - name: not-bobs
      subjects: [user:bob]
      repositories: ["secret/**"]
      actions: ["*"]
      effect: deny
`)
	reg := startRegistry(t, startOptions{config: cfg})
	h := reg.Addr
	run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
	aliceEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	bobEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, aliceEnv, crane, "auth", "login", "--insecure", h, "-u", "alice", "-p", "alice-pw")
	run(t, bobEnv, crane, "auth", "login", "--insecure", h, "-u", "bob", "-p", "bob-pw")
	img, _ := random.Image(256, 1)
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	run(t, aliceEnv, crane, "push", "--insecure", tarPath, h+"/team/app:v1")
	run(t, bobEnv, crane, "push", "--insecure", tarPath, h+"/other/app:v1")

	for _, c := range []struct {
		env        []string
		want, hide []string
	}{
		{aliceEnv, []string{"team/app"}, []string{"other/app", "portcullis/vulndb"}},
		{bobEnv, []string{"team/app", "other/app"}, []string{"portcullis/vulndb"}},
	} {
		out := run(t, c.env, crane, "catalog", "--insecure", h)
		lines := strings.Fields(out)
		for _, w := range c.want {
			if !slices.Contains(lines, w) {
				t.Errorf("catalog %q lacks %s", out, w)
			}
		}
		for _, x := range c.hide {
			if slices.Contains(lines, x) {
				t.Errorf("catalog %q lists %s", out, x)
			}
		}
	}

	// Paging through the catalog one repository at a time reveals nothing
	// left out: every Link names a repository alice may see.
	atok := bearer(t, reg.URL(), "alice", "alice-pw", "registry:catalog:*")
	next := "/v2/_catalog?n=1"
	var paged []string
	for range 10 {
		req, _ := http.NewRequest(http.MethodGet, reg.URL()+next, nil)
		req.Header.Set("Authorization", "Bearer "+atok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct{ Repositories []string }
		_ = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		paged = append(paged, page.Repositories...)
		link := resp.Header.Get("Link")
		if link == "" {
			break
		}
		if !strings.Contains(link, "last=team%2Fapp") {
			t.Errorf("alice's catalog Link %q names a repository she may not see", link)
		}
		next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
	}
	if !slices.Equal(paged, []string{"team/app"}) {
		t.Errorf("alice paging the catalog saw %v, want [team/app]", paged)
	}

	// bob may push and delete everywhere, but not the database.
	if out, err := runErr(bobEnv, crane, "push", "--insecure", tarPath, h+"/portcullis/vulndb:latest"); err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("a client overwrote the vulnerability database: %v\n%s", err, out)
	}
	if out, err := runErr(bobEnv, crane, "delete", "--insecure", h+"/portcullis/vulndb:latest"); err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("a client deleted the vulnerability database: %v\n%s", err, out)
	}
}

// TestEnforceAfterTheTag: in an enforce repository a tag's content must
// stay signed: once its signature is deleted, readers who may not push
// (and so could not sign it again) are refused the tag, its blobs and its
// digest, until it is signed again.
func TestEnforceAfterTheTag(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	s := newSigners(t)
	// alice may also delete, to delete the signature.
	users := strings.Replace(aliceAndBob(t), "actions: [pull, push]", "actions: [\"*\"]", 1)
	reg := startRegistry(t, startOptions{config: "version: 1\n" + users + s.trustConfig("enforce")})
	h := reg.Addr
	aliceEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	bobEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, aliceEnv, crane, "auth", "login", "--insecure", h, "-u", "alice", "-p", "alice-pw")
	run(t, bobEnv, crane, "auth", "login", "--insecure", h, "-u", "bob", "-p", "bob-pw")

	d := pushByDigestAs(t, aliceEnv, crane, h, "guarded/app")
	ref := h + "/guarded/app@" + d
	sign := func() {
		t.Helper()
		if out, err := runErr(aliceEnv, s.cosign, "sign", "--key", s.cosignKey, "--tlog-upload=false", "--use-signing-config=false",
			"--allow-http-registry", "-y", ref); err != nil {
			t.Fatalf("sign: %v\n%s", err, out)
		}
	}
	sign()
	run(t, aliceEnv, crane, "tag", "--insecure", ref, "v1")
	pulled := filepath.Join(t.TempDir(), "pulled.tar")
	run(t, bobEnv, crane, "pull", "--insecure", h+"/guarded/app:v1", pulled)

	// Delete every signature of the digest.
	btok := bearer(t, reg.URL(), "alice", "alice-pw", "repository:guarded/app:pull")
	sigs := referrerDigests(t, reg.URL(), "guarded/app", d, btok)
	if len(sigs) == 0 {
		t.Fatal("no signature referrer to delete")
	}
	for _, sd := range sigs {
		run(t, aliceEnv, crane, "delete", "--insecure", h+"/guarded/app@"+sd)
	}
	out, err := runErr(bobEnv, crane, "manifest", "--insecure", h+"/guarded/app:v1")
	if err == nil || !strings.Contains(out, "no longer signed") {
		t.Errorf("bob pulled a tag whose signature was deleted: %v\n%.300s", err, out)
	}
	if out, err := runErr(bobEnv, crane, "pull", "--insecure", ref, pulled); err == nil {
		t.Errorf("bob pulled the unsigned digest: %s", out)
	}
	run(t, aliceEnv, crane, "manifest", "--insecure", h+"/guarded/app:v1") // who may push (and sign) may read

	sign()
	run(t, bobEnv, crane, "pull", "--insecure", h+"/guarded/app:v1", pulled)
}

// referrerDigests lists the referrers of repo@d through the referrers API.
func referrerDigests(t *testing.T, base, repo, d, token string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/referrers/"+d, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		t.Fatalf("referrers of %s: %d %v", d, resp.StatusCode, err)
	}
	var out []string
	for _, m := range idx.Manifests {
		out = append(out, m.Digest)
	}
	return out
}
