package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// signers holds a cosign key pair and a Notation test certificate, made by
// the real CLIs.
type signers struct {
	cosign, notation     string
	cosignKey, cosignPub string
	otherKey             string // a key pair the registry does not trust
	notationEnv          []string
	notationCert         string
}

func newSigners(t *testing.T) *signers {
	t.Helper()
	s := &signers{cosign: tool(t, "cosign"), notation: tool(t, "notation")}
	dir := t.TempDir()
	runIn(t, dir, s.cosign, "generate-key-pair")
	s.cosignKey, s.cosignPub = filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	other := t.TempDir()
	runIn(t, other, s.cosign, "generate-key-pair")
	s.otherKey = filepath.Join(other, "cosign.key")
	home := t.TempDir()
	s.notationEnv = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "cfg")}
	run(t, s.notationEnv, s.notation, "cert", "generate-test", "--default", "portcullis-e2e")
	s.notationCert = filepath.Join(home, "cfg", "notation", "localkeys", "portcullis-e2e.crt")
	return s
}

func (s *signers) cosignSign(t *testing.T, key, ref string, extra ...string) (string, error) {
	t.Helper()
	return s.cosignSignEnv(nil, key, ref, extra...)
}

// cosignSignAs signs with the credentials in env, failing the test when
// cosign fails.
func (s *signers) cosignSignAs(t *testing.T, env []string, key, ref string) {
	t.Helper()
	if out, err := s.cosignSignEnv(env, key, ref); err != nil {
		t.Fatalf("cosign sign %s: %v\n%s", ref, err, out)
	}
}

func (s *signers) cosignSignEnv(env []string, key, ref string, extra ...string) (string, error) {
	args := append([]string{"sign", "--key", key, "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry", "-y"}, extra...)
	return runErr(env, s.cosign, append(args, ref)...)
}

func (s *signers) trustConfig(mode string) string {
	return fmt.Sprintf(`trust:
  keys:
    - name: ci
      file: %s
  trustStores:
    - name: test
      files: [%s]
  identities:
    - name: release-team
      trustStores: ["ca:test"]
      trustedIdentities: ["*"]
  policies:
    - name: guarded
      repositories: ["guarded/**"]
      mode: %s
      signers: [ci, release-team]
    - name: partner
      repositories: ["partner/**"]
      mode: %s
      signers: [release-team]
`, s.cosignPub, s.notationCert, mode, mode)
}

func init() {
	// cosign reads the key password from the environment.
	_ = os.Setenv("COSIGN_PASSWORD", "e2e-password")
}

// pushByDigest pushes a fresh image by digest and returns its digest.
func pushByDigest(t *testing.T, crane, host, repo string) string {
	t.Helper()
	return pushByDigestAs(t, nil, crane, host, repo)
}

// pushByDigestAs pushes a fresh image by digest with the credentials in env.
func pushByDigestAs(t *testing.T, env []string, crane, host, repo string) string {
	t.Helper()
	img, tarPath := imageTarball(t)
	d := imageDigest(t, img)
	run(t, env, crane, "push", "--insecure", tarPath, host+"/"+repo+"@"+d)
	return d
}

// imageTarball writes a fresh random image as a tarball crane can push.
func imageTarball(t *testing.T) (v1.Image, string) {
	t.Helper()
	img, _ := random.Image(1024, 1)
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	return img, tarPath
}

type verdictJSON struct {
	Trusted bool   `json:"trusted"`
	Signed  bool   `json:"signed"`
	Mode    string `json:"mode"`
	Reason  string `json:"reason"`
}

func getVerdict(t *testing.T, base, repo, d, query string, header ...string) verdictJSON {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/repositories/"+repo+"/manifests/"+d+"/verdict"+query, nil)
	if len(header) == 2 {
		req.Header.Set(header[0], header[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v verdictJSON
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("verdict API: %d", resp.StatusCode)
	}
	return v
}

// TestTrustEnforce: a plain tag push of an unsigned image is refused with
// the steps to follow; push by digest, sign (cosign bundle, cosign legacy
// layout, notation), tag succeeds; untrusted and misplaced signatures never
// count.
func TestTrustEnforce(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	s := newSigners(t)
	reg := startRegistry(t, startOptions{config: "version: 1\n" + s.trustConfig("enforce")})
	h := reg.Addr

	_, tarPath := imageTarball(t)
	out, err := runErr(nil, crane, "push", "--insecure", tarPath, h+"/guarded/app:v1")
	if err == nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "push by digest") || !strings.Contains(out, "cosign sign") {
		t.Fatalf("unsigned tag push: %v\n%s", err, out)
	}
	// Unguarded repositories are not affected.
	run(t, nil, crane, "push", "--insecure", tarPath, h+"/free/app:v1")

	cases := []struct {
		name string
		sign func(ref string) (string, error)
	}{
		{"cosign bundle", func(ref string) (string, error) { return s.cosignSign(t, s.cosignKey, ref) }},
		{"cosign legacy layout", func(ref string) (string, error) {
			return s.cosignSign(t, s.cosignKey, ref, "--new-bundle-format=false")
		}},
		{"notation", func(ref string) (string, error) {
			return runErr(s.notationEnv, s.notation, "sign", "--insecure-registry", ref)
		}},
	}
	for i, c := range cases {
		d := pushByDigest(t, crane, h, "guarded/app")
		ref := h + "/guarded/app@" + d
		tag := fmt.Sprintf("signed-%d", i)
		if out, err := runErr(nil, crane, "tag", "--insecure", ref, tag); err == nil {
			t.Fatalf("%s: tagging before signing succeeded: %s", c.name, out)
		}
		if out, err := c.sign(ref); err != nil {
			t.Fatalf("%s: sign: %v\n%s", c.name, err, out)
		}
		if out, err := runErr(nil, crane, "tag", "--insecure", ref, tag); err != nil {
			t.Errorf("%s: tagging after signing: %v\n%s", c.name, err, out)
		}
		if v := getVerdict(t, reg.URL(), "guarded/app", d, ""); !v.Trusted {
			t.Errorf("%s: verdict %+v", c.name, v)
		}
	}

	// Never valid: an untrusted key; a signature made for another digest
	// copied onto this one; a signature in another repository.
	d := pushByDigest(t, crane, h, "guarded/app")
	ref := h + "/guarded/app@" + d
	if out, err := s.cosignSign(t, s.otherKey, ref); err != nil {
		t.Fatalf("sign with the other key: %v\n%s", err, out)
	}
	if out, err := runErr(nil, crane, "tag", "--insecure", ref, "untrusted"); err == nil {
		t.Errorf("tag with an untrusted signature succeeded: %s", out)
	}
	// A legacy signature (its payload names the repository) copied with its
	// image to another repository does not count there.
	other := pushByDigest(t, crane, h, "guarded/elsewhere")
	if out, err := s.cosignSign(t, s.cosignKey, h+"/guarded/elsewhere@"+other, "--new-bundle-format=false"); err != nil {
		t.Fatalf("sign elsewhere: %v\n%s", err, out)
	}
	sigTag := "sha256-" + strings.TrimPrefix(other, "sha256:") + ".sig"
	run(t, nil, crane, "copy", "--insecure", h+"/guarded/elsewhere@"+other, h+"/guarded/copy@"+other)
	run(t, nil, crane, "copy", "--insecure", h+"/guarded/elsewhere:"+sigTag, h+"/guarded/copy:"+sigTag)
	if v := getVerdict(t, reg.URL(), "guarded/elsewhere", other, ""); !v.Trusted {
		t.Errorf("legacy signature in its own repository: %+v", v)
	}
	if v := getVerdict(t, reg.URL(), "guarded/copy", other, ""); v.Trusted {
		t.Errorf("legacy signature copied from another repository accepted: %+v", v)
	}
	// A bundle binds only the digest; copied into repositories whose policy
	// trusts other signers, it does not count there.
	b := pushByDigest(t, crane, h, "guarded/bundled")
	if out, err := s.cosignSign(t, s.cosignKey, h+"/guarded/bundled@"+b); err != nil {
		t.Fatalf("sign bundled: %v\n%s", err, out)
	}
	run(t, nil, crane, "copy", "--insecure", h+"/guarded/bundled@"+b, h+"/partner/bundled@"+b)
	resp, err := http.Get(reg.URL() + "/v2/guarded/bundled/referrers/" + b)
	if err != nil {
		t.Fatal(err)
	}
	var refs struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&refs)
	resp.Body.Close()
	if len(refs.Manifests) == 0 {
		t.Fatal("no bundle referrer to copy")
	}
	for _, m := range refs.Manifests {
		run(t, nil, crane, "copy", "--insecure", h+"/guarded/bundled@"+m.Digest, h+"/partner/bundled@"+m.Digest)
	}
	if v := getVerdict(t, reg.URL(), "partner/bundled", b, ""); v.Trusted || !v.Signed {
		t.Errorf("bundle signed by a key partner/** does not trust: %+v", v)
	}
	v := getVerdict(t, reg.URL(), "guarded/app", d, "")
	if v.Trusted || !v.Signed {
		t.Errorf("untrusted key: verdict %+v, want signed and not trusted", v)
	}

	resp, err = http.Get(reg.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`portcullis_admission_signature_checks_total{kind="cosign-bundle",result="valid"}`,
		`portcullis_admission_signature_checks_total{kind="cosign-bundle",result="invalid"}`,
		`portcullis_admission_signature_checks_total{kind="notation-jws",result="valid"}`,
		`portcullis_admission_verdicts_total{check="tag",mode="enforce",result="untrusted"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestTrustQuarantineAndAudit: quarantine accepts the push but withholds
// pulls from everyone except the pusher and signers until a trusted
// signature arrives; ?wait blocks until then. Audit accepts everything and
// records the verdict.
func TestTrustQuarantineAndAudit(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	s := newSigners(t)
	cfg := "version: 1\n" + aliceAndBob(t) + strings.Replace(s.trustConfig("quarantine"), "policies:\n",
		"policies:\n    - name: watch\n      repositories: [\"audited/**\"]\n      mode: audit\n      signers: [ci]\n", 1)
	reg := startRegistry(t, startOptions{config: cfg})
	h := reg.Addr
	aliceEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	bobEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, aliceEnv, crane, "auth", "login", "--insecure", h, "-u", "alice", "-p", "alice-pw")
	run(t, bobEnv, crane, "auth", "login", "--insecure", h, "-u", "bob", "-p", "bob-pw")

	img, _ := random.Image(1024, 1)
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	d := imageDigest(t, img)
	run(t, aliceEnv, crane, "push", "--insecure", tarPath, h+"/guarded/app:v1")
	out, err := runErr(bobEnv, crane, "manifest", "--insecure", h+"/guarded/app:v1")
	if err == nil || !strings.Contains(out, "quarantined") {
		t.Fatalf("bob pulled quarantined content: %v\n%s", err, out)
	}
	if strings.Contains(out, strings.TrimPrefix(d, "sha256:")) {
		t.Errorf("the refusal of a pull by tag names the digest: %s", out)
	}
	run(t, aliceEnv, crane, "manifest", "--insecure", h+"/guarded/app:v1") // the pusher may
	// Every other route to the quarantined content is closed to bob: the
	// manifest read as a blob, its config and layer, its referrers.
	cfgName, _ := img.ConfigName()
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	for what, blob := range map[string]string{"manifest": d, "config": cfgName.String(), "layer": layer.String()} {
		if out, err := runErr(bobEnv, crane, "blob", "--insecure", h+"/guarded/app@"+blob); err == nil || !strings.Contains(out, "withheld") {
			t.Errorf("bob read the quarantined %s as a blob: %v\n%.200s", what, err, out)
		}
		if what != "manifest" {
			// A manifest is served by /manifests/, not as a blob of the
			// repository (the registry core links it as a revision only).
			run(t, aliceEnv, crane, "blob", "--insecure", h+"/guarded/app@"+blob)
		}
	}
	btok := bearer(t, reg.URL(), "bob", "bob-pw", "repository:guarded/app:pull")
	req, _ := http.NewRequest(http.MethodGet, reg.URL()+"/v2/guarded/app/referrers/"+d, nil)
	req.Header.Set("Authorization", "Bearer "+btok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob listed the referrers of quarantined content: %v %v", err, resp.Status)
	} else {
		resp.Body.Close()
	}
	req, _ = http.NewRequest(http.MethodGet, reg.URL()+"/api/v1/repositories/guarded/app/manifests/"+d+"/sbom", nil)
	req.Header.Set("Authorization", "Bearer "+btok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob read the SBOM of quarantined content: %v %v", err, resp.Status)
	} else {
		resp.Body.Close()
	}

	// Sign while a CI job waits on the verdict.
	tok := bearer(t, reg.URL(), "bob", "bob-pw", "repository:guarded/app:pull")
	done := make(chan verdictJSON, 1)
	go func() {
		done <- getVerdict(t, reg.URL(), "guarded/app", d, "?wait=60s", "Authorization", "Bearer "+tok)
	}()
	// Sign once the wait has asked for the verdict at least once.
	if !eventually(30*time.Second, func() bool {
		return metric(t, reg, `portcullis_admission_verdicts_total{check="api",mode="quarantine",result="untrusted"}`) >= 1
	}) {
		t.Fatal("the verdict wait never asked for the verdict")
	}
	signEnv := append([]string{}, aliceEnv...)
	if out, err := runErr(signEnv, s.cosign, "sign", "--key", s.cosignKey, "--tlog-upload=false", "--use-signing-config=false",
		"--allow-http-registry", "-y", h+"/guarded/app@"+d); err != nil {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	select {
	case v := <-done:
		if !v.Trusted {
			t.Errorf("verdict after signing: %+v", v)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("verdict wait did not return")
	}
	if out, err := runErr(bobEnv, crane, "manifest", "--insecure", h+"/guarded/app:v1"); err != nil {
		t.Errorf("bob after signing: %v\n%s", err, out)
	}
	if out, err := runErr(bobEnv, crane, "pull", "--insecure", h+"/guarded/app:v1", filepath.Join(t.TempDir(), "pulled.tar")); err != nil {
		t.Errorf("bob pulling the whole image after signing: %v\n%s", err, out)
	}

	// A signed multi-platform index covers its children: bob pulls a
	// child by digest once the index is signed.
	idx, _ := random.Index(512, 1, 2)
	aliceAuth := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})
	bobAuth := remote.WithAuth(&authn.Basic{Username: "bob", Password: "bob-pw"})
	if err := remote.WriteIndex(ref(t, h+"/guarded/multi:v1"), idx, aliceAuth); err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	child := h + "/guarded/multi@" + im.Manifests[0].Digest.String()
	if _, err := remote.Get(ref(t, child), bobAuth); err == nil {
		t.Error("bob pulled a child of an unsigned index in quarantine")
	}
	idxDigest, _ := idx.Digest()
	if out, err := runErr(aliceEnv, s.cosign, "sign", "--key", s.cosignKey, "--tlog-upload=false", "--use-signing-config=false",
		"--allow-http-registry", "-y", h+"/guarded/multi@"+idxDigest.String()); err != nil {
		t.Fatalf("sign index: %v\n%s", err, out)
	}
	if _, err := remote.Get(ref(t, child), bobAuth); err != nil {
		t.Errorf("bob pulling a child of a signed index: %v", err)
	}

	// Audit: accepted unsigned, verdict recorded and served.
	run(t, aliceEnv, crane, "push", "--insecure", tarPath, h+"/audited/app:v1")
	run(t, bobEnv, crane, "manifest", "--insecure", h+"/audited/app:v1")
	atok := bearer(t, reg.URL(), "bob", "bob-pw", "repository:audited/app:pull")
	if v := getVerdict(t, reg.URL(), "audited/app", d, "", "Authorization", "Bearer "+atok); v.Trusted || v.Mode != "audit" {
		t.Errorf("audit verdict: %+v", v)
	}
}

// bearer fetches a token from the registry's token service.
func bearer(t *testing.T, base, user, pw, scope string) string {
	t.Helper()
	tok, code := tryBearer(t, base, user, pw, scope)
	if tok == "" {
		t.Fatalf("token: %d", code)
	}
	return tok
}

// tryBearer asks the registry's token service for a token; it returns ""
// and the status when there is none.
func tryBearer(t *testing.T, base, user, pw, scope string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/token?service=portcullis&scope="+scope, nil)
	req.SetBasicAuth(user, pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&tok) != nil {
		return "", resp.StatusCode
	}
	return tok.Token, resp.StatusCode
}

// aliceAndBob returns an auth section: alice may pull and push everything
// (password alice-pw), bob may pull everything (bob-pw).
func aliceAndBob(t *testing.T) string {
	t.Helper()
	return usersAliceAndBob(t, `    - name: alice-pushes
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push]
    - name: bob-pulls
      subjects: [user:bob]
      repositories: ["**"]
      actions: [pull]
`)
}

// usersAliceAndBob is an auth section with users alice (password
// alice-pw) and bob (bob-pw) and the given rules, YAML list items.
func usersAliceAndBob(t *testing.T, rules string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, nil, registryBin, "auth", "keygen", filepath.Join(dir, "key.pem"))
	writeFile(t, filepath.Join(dir, "alice"), "alice-pw")
	writeFile(t, filepath.Join(dir, "bob"), "bob-pw")
	return fmt.Sprintf(`auth:
  enabled: true
  token:
    signingKeyFile: %[1]s/key.pem
  users:
    - name: alice
      passwordFile: %[1]s/alice
    - name: bob
      passwordFile: %[1]s/bob
  rules:
%[2]s`, dir, rules)
}
