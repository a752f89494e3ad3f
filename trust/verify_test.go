package trust_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/trust"
)

const (
	bundleType   = "application/vnd.dev.sigstore.bundle"
	notationType = "application/vnd.cncf.notary.signature"
)

// fixture is one registry with the keys and identities every test shares.
type fixture struct {
	*signEnv
	release, other, ed, rsa cosignKey
	alpha, beta             notationIdentity
	cfg                     config.Trust
}

// TestSignatures signs images in one in-process registry with the real
// cosign and notation CLIs and verifies them.
func TestSignatures(t *testing.T) {
	f := newFixture(t)
	for name, test := range map[string]func(*testing.T, *fixture){
		"cosign":   testCosign,
		"notation": testNotation,
		"errors":   testVerifyErrors,
		"cache":    testCache,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, f)
		})
	}
}

func newFixture(t testing.TB) *fixture {
	f := &fixture{signEnv: newSignEnv(t)}
	f.release = f.cosignGenerate(t, "release")
	f.other = f.cosignGenerate(t, "other")
	edKey, rsaKey := newKeys(t)
	f.ed = f.cosignImport(t, "ed", edKey)
	f.rsa = f.cosignImport(t, "rsa", rsaKey)
	f.alpha = f.notationTest(t, "alpha")
	f.beta = f.notationTest(t, "beta")
	f.cfg = config.Trust{
		Keys: []config.TrustKey{
			{Name: "release", File: f.release.pub},
			{Name: "ed", File: f.ed.pub},
			{Name: "rsa", File: f.rsa.pub},
		},
		TrustStores: []config.TrustStore{
			{Name: "alpha", Type: "ca", Files: []string{f.alpha.trustPEM}},
		},
		Identities: []config.TrustIdentity{
			{Name: "alpha", TrustStores: []string{"ca:alpha"}, TrustedIdentities: []string{"x509.subject: " + f.alpha.subject}},
		},
		Policies: []config.TrustPolicy{
			{Name: "team", Repositories: []string{"team/**"}, Signers: []string{"release", "ed", "rsa", "alpha"}},
			{Name: "strict", Repositories: []string{"strict/**"}, Signers: []string{"release", "alpha"}, Require: "all", Mode: "quarantine"},
			{Name: "bound", Repositories: []string{"bound/**"}, Signers: []string{"release", "alpha"}, RequireRepositoryBinding: true},
		},
	}
	return f
}

// verifier builds a Verifier over the fixture's registry.
func (f *fixture) verifier(t testing.TB, cfg config.Trust) *trust.Verifier {
	t.Helper()
	v, err := trust.New(cfg, f.c, trust.Options{})
	if err != nil {
		t.Fatalf("trust.New: %v", err)
	}
	return v
}

func verify(t testing.TB, v *trust.Verifier, repo string, d digest.Digest, parents ...digest.Digest) trust.Verdict {
	t.Helper()
	verdict, err := v.VerifyWithParents(context.Background(), repo, d, parents)
	if err != nil {
		t.Fatalf("verify %s@%s: %v", repo, d, err)
	}
	return verdict
}

// wantSigs checks the verdict's signatures, in order: kind and validity.
func wantSigs(t testing.TB, verdict trust.Verdict, want ...sigWant) {
	t.Helper()
	if len(verdict.Signatures) != len(want) {
		t.Fatalf("got %d signatures, want %d: %s", len(verdict.Signatures), len(want), dump(verdict))
	}
	for i, w := range want {
		s := verdict.Signatures[i]
		if s.Kind != w.kind || s.Valid != w.valid || (w.signer != "" && s.Signer != w.signer) || !strings.Contains(s.Reason, w.reason) {
			t.Errorf("signature %d: got %s valid=%v signer=%q reason=%q; want %s valid=%v signer=%q reason~%q",
				i, s.Kind, s.Valid, s.Signer, s.Reason, w.kind, w.valid, w.signer, w.reason)
		}
	}
}

type sigWant struct {
	kind   trust.Kind
	valid  bool
	signer string
	reason string
}

func dump(v trust.Verdict) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func wantTrusted(t testing.TB, verdict trust.Verdict, trusted bool) {
	t.Helper()
	if verdict.Trusted != trusted || (trusted && !verdict.Signed) {
		t.Fatalf("trusted=%v signed=%v, want trusted=%v: %s", verdict.Trusted, verdict.Signed, trusted, dump(verdict))
	}
}

func testCosign(t *testing.T, f *fixture) {
	v := f.verifier(t, f.cfg)

	for _, tc := range []struct {
		name string
		key  cosignKey
		sig  string
	}{
		{"p256", f.release, "release"},
		{"ed25519", f.ed, "ed"},
		{"rsa", f.rsa, "rsa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "team/cosign-" + tc.name
			d := f.pushImage(t, repo)
			verdict := verify(t, v, repo, d)
			wantTrusted(t, verdict, false)
			if verdict.Signed || !strings.Contains(verdict.Reason, "no signature") {
				t.Errorf("unsigned: %s", dump(verdict))
			}

			f.cosignSign(t, tc.key, repo, d, true)
			verdict = verify(t, v, repo, d)
			wantTrusted(t, verdict, true)
			wantSigs(t, verdict, sigWant{trust.KindCosignBundle, true, tc.sig, "verified"})
			if verdict.Mode != policy.ModeEnforce || verdict.Policy != "team" || !strings.HasPrefix(verdict.PolicyVersion, "sha256:") {
				t.Errorf("policy fields: %s", dump(verdict))
			}
			if id := verdict.Signatures[0].Identity; !strings.HasPrefix(id, "SHA256:") {
				t.Errorf("identity %q", id)
			}

			d2 := f.pushImage(t, repo)
			f.cosignSign(t, tc.key, repo, d2, false)
			verdict = verify(t, v, repo, d2)
			wantTrusted(t, verdict, true)
			wantSigs(t, verdict, sigWant{trust.KindCosignLegacy, true, tc.sig, "verified"})
		})
	}

	t.Run("untrusted key", func(t *testing.T) {
		repo := "team/untrusted"
		d := f.pushImage(t, repo)
		f.cosignSign(t, f.other, repo, d, true)
		f.cosignSign(t, f.other, repo, d, false)
		verdict := verify(t, v, repo, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict,
			sigWant{trust.KindCosignBundle, false, "", "not verified by a trusted key"},
			sigWant{trust.KindCosignLegacy, false, "", "not signed by a trusted key"})
		if !verdict.Signed || !strings.Contains(verdict.Reason, "none valid") {
			t.Errorf("reason: %s", verdict.Reason)
		}
	})

	t.Run("another digest", func(t *testing.T) {
		repo := "team/other-digest"
		a, b := f.pushImage(t, repo), f.pushImage(t, repo)
		f.cosignSign(t, f.release, repo, b, true)
		f.cosignSign(t, f.release, repo, b, false)
		// B's bundle, re-attached to A.
		refs := referrersOf(t, f.c, repo, b, bundleType)
		if len(refs) != 1 {
			t.Fatalf("want one bundle referrer of B, got %v", refs)
		}
		mtA, rawA := getManifest(t, f.c, repo, a)
		rewriteArtifact(t, f.c, repo, refs[0].Digest, &v1.Descriptor{MediaType: mtA, Digest: a, Size: int64(len(rawA))}, nil)
		// B's legacy signature manifest, tagged as A's.
		sigB, err := f.c.ResolveTag(context.Background(), repo, "sha256-"+b.Encoded()+".sig")
		if err != nil {
			t.Fatal(err)
		}
		mt, raw := getManifest(t, f.c, repo, sigB)
		pushManifest(t, f.c.base, repo, "sha256-"+a.Encoded()+".sig", mt, raw)

		verdict := verify(t, v, repo, a)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict,
			sigWant{trust.KindCosignBundle, false, "", "not verified by a trusted key"},
			sigWant{trust.KindCosignLegacy, false, "release", "signature is for " + b.String()})
		wantTrusted(t, verify(t, v, repo, b), true)
	})

	t.Run("tampered", func(t *testing.T) {
		src, repo := "team/tamper-src", "team/tampered"
		d := f.pushImage(t, src)
		f.pushImage(t, repo) // the repository exists
		copyManifest(t, f.c, src, repo, d, "")
		f.cosignSign(t, f.release, src, d, true)
		f.cosignSign(t, f.release, src, d, false)
		bundleRef := referrersOf(t, f.c, src, d, bundleType)[0].Digest
		copyManifest(t, f.c, src, repo, bundleRef, "") // the pristine copy: valid here (team/** trusts release)
		verdict := verify(t, v, repo, d)
		wantTrusted(t, verdict, true)

		// Only tampered signatures from here on.
		repo2 := "team/tampered2"
		copyManifest(t, f.c, src, repo2, d, "")
		copyManifest(t, f.c, src, repo2, bundleRef, "")
		subject := func() *v1.Descriptor {
			mt, raw := getManifest(t, f.c, repo2, d)
			return &v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
		}()
		editBundle := func(edit func(env map[string]any)) func([]byte) []byte {
			return func(b []byte) []byte {
				var doc map[string]any
				if err := json.Unmarshal(b, &doc); err != nil {
					t.Fatal(err)
				}
				edit(doc["dsseEnvelope"].(map[string]any))
				out, _ := json.Marshal(doc)
				return out
			}
		}
		badSig := rewriteArtifact(t, f.c, repo2, bundleRef, subject, editBundle(func(env map[string]any) {
			s := env["signatures"].([]any)[0].(map[string]any)
			raw, _ := base64.StdEncoding.DecodeString(s["sig"].(string))
			raw[len(raw)/2] ^= 0x01
			s["sig"] = base64.StdEncoding.EncodeToString(raw)
		}))
		badPayload := rewriteArtifact(t, f.c, repo2, bundleRef, subject, editBundle(func(env map[string]any) {
			raw, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
			raw = []byte(strings.Replace(string(raw), `"predicate":{}`, `"predicate":{"x":1}`, 1))
			env["payload"] = base64.StdEncoding.EncodeToString(raw)
		}))
		// Remove the pristine copy from the picture: verify only the
		// tampered ones by deleting nothing but checking per signature.
		if badSig == bundleRef || badPayload == bundleRef || badSig == badPayload {
			t.Fatal("tampering changed nothing")
		}
		verdict = verify(t, v, repo2, d)
		seen := 0
		for _, s := range verdict.Signatures {
			switch s.Digest {
			case bundleRef:
				seen++
				if !s.Valid {
					t.Errorf("pristine bundle invalid: %s", s.Reason)
				}
			case badSig, badPayload:
				seen++
				if s.Valid {
					t.Errorf("tampered bundle %s valid", s.Digest)
				}
				t.Logf("tampered bundle: %s", s.Reason)
			}
		}
		if seen != 3 {
			t.Errorf("found %d of the 3 bundles: %s", seen, dump(verdict))
		}

		// Legacy: a payload edited under the same signature, and a
		// signature edited over the same payload.
		repo3 := "team/tampered3"
		copyManifest(t, f.c, src, repo3, d, "")
		sigTag := "sha256-" + d.Encoded() + ".sig"
		sigD, err := f.c.ResolveTag(context.Background(), src, sigTag)
		if err != nil {
			t.Fatal(err)
		}
		mt, raw := getManifest(t, f.c, src, sigD)
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		payload := getBlob(t, f.c, src, m.Layers[0].Digest)
		pushBlob(t, f.c.base, repo3, m.Config.MediaType, getBlob(t, f.c, src, m.Config.Digest))
		edited := []byte(strings.Replace(string(payload), `"optional":null`, `"optional":{"x":"y"}`, 1))
		if string(edited) == string(payload) {
			edited = append(payload, ' ')
		}
		l0 := pushBlob(t, f.c.base, repo3, m.Layers[0].MediaType, edited)
		l0.Annotations = m.Layers[0].Annotations
		l1 := pushBlob(t, f.c.base, repo3, m.Layers[0].MediaType, payload)
		l1.Annotations = map[string]string{}
		for k, val := range m.Layers[0].Annotations {
			l1.Annotations[k] = val
		}
		sig, _ := base64.StdEncoding.DecodeString(l1.Annotations["dev.cosignproject.cosign/signature"])
		sig[len(sig)-5] ^= 0x01
		l1.Annotations["dev.cosignproject.cosign/signature"] = base64.StdEncoding.EncodeToString(sig)
		m.Layers = []v1.Descriptor{l0, l1}
		nraw, _ := json.Marshal(m)
		pushManifest(t, f.c.base, repo3, sigTag, mt, nraw)
		verdict = verify(t, v, repo3, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict,
			sigWant{trust.KindCosignLegacy, false, "", "not signed by a trusted key"},
			sigWant{trust.KindCosignLegacy, false, "", "not signed by a trusted key"})
	})

	t.Run("copied from another repository", func(t *testing.T) {
		src, dst := "team/copy-src", "team/copy-dst"
		d := f.pushImage(t, src)
		f.cosignSign(t, f.release, src, d, false)
		f.cosignSign(t, f.release, src, d, true, "-a", trust.RepositoryAnnotation+"="+src)
		wantTrusted(t, verify(t, v, src, d), true)

		copyManifest(t, f.c, src, dst, d, "")
		sigTag := "sha256-" + d.Encoded() + ".sig"
		sigD, err := f.c.ResolveTag(context.Background(), src, sigTag)
		if err != nil {
			t.Fatal(err)
		}
		copyManifest(t, f.c, src, dst, sigD, sigTag)
		for _, r := range referrersOf(t, f.c, src, d, bundleType) {
			copyManifest(t, f.c, src, dst, r.Digest, "")
		}
		verdict := verify(t, v, dst, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict,
			sigWant{trust.KindCosignBundle, false, "release", `bound to repository "team/copy-src"`},
			sigWant{trust.KindCosignLegacy, false, "release", `for repository`})
	})

	t.Run("cached under another name", func(t *testing.T) {
		// A pull-through cache's repository holds content signed under
		// the remote's name for it: that name counts, and only for it.
		src, dst, other := "team/up-src", "team/hub/team/up-src", "team/hub/other"
		d := f.pushImage(t, src)
		f.cosignSign(t, f.release, src, d, false)
		aliased, err := trust.New(f.cfg, f.c, trust.Options{Aliases: func(repo string) []string {
			if repo == dst {
				return []string{src}
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		sigTag := "sha256-" + d.Encoded() + ".sig"
		sigD, err := f.c.ResolveTag(context.Background(), src, sigTag)
		if err != nil {
			t.Fatal(err)
		}
		for _, repo := range []string{dst, other} {
			copyManifest(t, f.c, src, repo, d, "")
			copyManifest(t, f.c, src, repo, sigD, sigTag)
		}
		wantTrusted(t, verify(t, aliased, dst, d), true)
		verdict := verify(t, aliased, other, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindCosignLegacy, false, "release", `for repository`})
	})

	t.Run("repository binding required", func(t *testing.T) {
		repo := "bound/app"
		d := f.pushImage(t, repo)
		f.cosignSign(t, f.release, repo, d, true)
		verdict := verify(t, v, repo, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindCosignBundle, false, "release", "lacks the " + trust.RepositoryAnnotation})

		f.cosignSign(t, f.release, repo, d, true, "-a", trust.RepositoryAnnotation+"="+repo)
		verdict = verify(t, v, repo, d)
		wantTrusted(t, verdict, true)
	})

	t.Run("index covers children", func(t *testing.T) {
		repo := "team/index"
		idx, children := f.pushIndex(t, repo, 2)
		unrelated := f.pushImage(t, repo)
		f.cosignSign(t, f.release, repo, idx, true)
		f.cosignSign(t, f.release, repo, unrelated, false)

		wantTrusted(t, verify(t, v, repo, idx), true)
		wantTrusted(t, verify(t, v, repo, children[0]), false)
		verdict := verify(t, v, repo, children[0], idx)
		wantTrusted(t, verdict, true)
		if verdict.Signatures[0].Subject != idx {
			t.Errorf("subject %s, want the index %s", verdict.Signatures[0].Subject, idx)
		}
		// A signed manifest that is not an index containing the child
		// does not cover it.
		verdict = verify(t, v, repo, children[1], unrelated)
		wantTrusted(t, verdict, false)
		if !strings.Contains(verdict.Reason, "does not list") {
			t.Errorf("reason: %s", verdict.Reason)
		}

		// Nested: an outer index over idx, signed by a key that is the only
		// one trusted here, covers idx's children through idx.
		mt, raw := getManifest(t, f.c, repo, idx)
		outer, err := json.Marshal(v1.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: v1.MediaTypeImageIndex,
			Manifests: []v1.Descriptor{{MediaType: mt, Digest: idx, Size: int64(len(raw))}},
		})
		if err != nil {
			t.Fatal(err)
		}
		outerD := pushManifest(t, f.c.base, repo, "", v1.MediaTypeImageIndex, outer)
		f.cosignSign(t, f.ed, repo, outerD, true)
		edOnly := f.cfg
		edOnly.Policies = []config.TrustPolicy{{Name: "ed", Repositories: []string{"team/**"}, Signers: []string{"ed"}}}
		ved := f.verifier(t, edOnly)
		wantTrusted(t, verify(t, ved, repo, children[0], idx), false)
		wantTrusted(t, verify(t, ved, repo, children[0], outerD), false) // outer does not list the child itself
		verdict = verify(t, ved, repo, children[0], outerD, idx)
		wantTrusted(t, verdict, true)
		if verdict.Signers[0] != "ed" {
			t.Errorf("signers %v", verdict.Signers)
		}
	})
}

func testNotation(t *testing.T, f *fixture) {
	v := f.verifier(t, f.cfg)

	for _, format := range []struct {
		flag string
		kind trust.Kind
	}{{"jws", trust.KindNotationJWS}, {"cose", trust.KindNotationCOSE}} {
		t.Run(format.flag, func(t *testing.T) {
			repo := "team/notation-" + format.flag
			d := f.pushImage(t, repo)
			f.notationSign(t, f.alpha, repo, d, "--signature-format", format.flag)
			verdict := verify(t, v, repo, d)
			wantTrusted(t, verdict, true)
			wantSigs(t, verdict, sigWant{format.kind, true, "alpha", "verified"})
			if got := verdict.Signatures[0].Identity; got != "CN=alpha,O=Notary,L=Seattle,ST=WA,C=US" {
				t.Errorf("identity %q", got)
			}

			// Tampered: flip one byte of the envelope's signature.
			refs := referrersOf(t, f.c, repo, d, notationType)
			bad := rewriteArtifact(t, f.c, repo, refs[0].Digest, nil, func(b []byte) []byte {
				out := append([]byte(nil), b...)
				if format.flag == "jws" {
					var jws map[string]any
					if err := json.Unmarshal(b, &jws); err != nil {
						t.Fatal(err)
					}
					sig, _ := base64.RawURLEncoding.DecodeString(jws["signature"].(string))
					sig[len(sig)/2] ^= 1
					jws["signature"] = base64.RawURLEncoding.EncodeToString(sig)
					out, _ = json.Marshal(jws)
				} else {
					out[len(out)-10] ^= 1 // inside the trailing signature bytes
				}
				return out
			})
			verdict = verify(t, v, repo, d)
			wantTrusted(t, verdict, true) // the original still counts
			found := false
			for _, s := range verdict.Signatures {
				if s.Digest == bad {
					found = true
					if s.Valid {
						t.Errorf("tampered envelope valid")
					}
					t.Logf("tampered envelope: %s", s.Reason)
				}
			}
			if !found || len(verdict.Signatures) != 2 {
				t.Errorf("tampered envelope not examined: %s", dump(verdict))
			}
		})
	}

	t.Run("untrusted certificate", func(t *testing.T) {
		repo := "team/notation-untrusted"
		d := f.pushImage(t, repo)
		f.notationSign(t, f.beta, repo, d)
		verdict := verify(t, v, repo, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindNotationJWS, false, "", "not verified by a trusted identity"})
	})

	t.Run("untrusted identity", func(t *testing.T) {
		// alpha's certificate is in the store, but the policy pins another subject.
		cfg := f.cfg
		cfg.Identities = []config.TrustIdentity{{Name: "alpha", TrustStores: []string{"ca:alpha"}, TrustedIdentities: []string{"x509.subject: C=US, ST=WA, O=Notary, CN=somebody"}}}
		v := f.verifier(t, cfg)
		repo := "team/notation-identity"
		d := f.pushImage(t, repo)
		f.notationSign(t, f.alpha, repo, d)
		wantTrusted(t, verify(t, v, repo, d), false)
	})

	t.Run("another digest", func(t *testing.T) {
		repo := "team/notation-other-digest"
		a, b := f.pushImage(t, repo), f.pushImage(t, repo)
		f.notationSign(t, f.alpha, repo, b)
		refs := referrersOf(t, f.c, repo, b, notationType)
		mtA, rawA := getManifest(t, f.c, repo, a)
		rewriteArtifact(t, f.c, repo, refs[0].Digest, &v1.Descriptor{MediaType: mtA, Digest: a, Size: int64(len(rawA))}, nil)
		verdict := verify(t, v, repo, a)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindNotationJWS, false, "", "content descriptor mismatch"})
	})

	t.Run("expired certificate", func(t *testing.T) {
		const life = 12 * time.Second // long enough to sign on a loaded machine
		id := f.notationChain(t, "short", time.Now().Add(-time.Hour), time.Now().Add(life))
		cfg := f.cfg
		cfg.TrustStores = append(cfg.TrustStores[:len(cfg.TrustStores):len(cfg.TrustStores)], config.TrustStore{Name: "short", Type: "ca", Files: []string{id.trustPEM}})
		cfg.Identities = append(cfg.Identities[:len(cfg.Identities):len(cfg.Identities)], config.TrustIdentity{Name: "short", TrustStores: []string{"ca:short"}, TrustedIdentities: []string{"*"}})
		cfg.Policies = []config.TrustPolicy{{Name: "team", Repositories: []string{"team/**"}, Signers: []string{"short"}}}
		repo := "team/notation-expired"
		d := f.pushImage(t, repo)
		start := time.Now()
		f.notationSign(t, id, repo, d)
		if took := time.Since(start); took > life-2*time.Second {
			t.Fatalf("notation sign took %v, too close to the certificate's %v life to test expiry", took, life)
		}
		wantTrusted(t, verify(t, f.verifier(t, cfg), repo, d), true)
		time.Sleep(time.Until(start.Add(life + time.Second)))
		verdict := verify(t, f.verifier(t, cfg), repo, d) // a fresh cache
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindNotationJWS, false, "", "expired"})
	})

	t.Run("expired signature", func(t *testing.T) {
		repo := "team/notation-sig-expired"
		d := f.pushImage(t, repo)
		f.notationSign(t, f.alpha, repo, d, "--expiry", "1s")
		time.Sleep(2 * time.Second)
		verdict := verify(t, v, repo, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindNotationJWS, false, "", "expired"})
	})

	t.Run("copied from another repository", func(t *testing.T) {
		src, dst := "team/notation-copy-src", "team/notation-copy-dst"
		d := f.pushImage(t, src)
		f.notationSign(t, f.alpha, src, d, "--user-metadata", trust.RepositoryAnnotation+"="+src)
		wantTrusted(t, verify(t, v, src, d), true)
		copyManifest(t, f.c, src, dst, d, "")
		for _, r := range referrersOf(t, f.c, src, d, notationType) {
			copyManifest(t, f.c, src, dst, r.Digest, "")
		}
		verdict := verify(t, v, dst, d)
		wantTrusted(t, verdict, false)
		wantSigs(t, verdict, sigWant{trust.KindNotationJWS, false, "alpha", `bound to repository "team/notation-copy-src"`})
	})

	t.Run("require all", func(t *testing.T) {
		repo := "strict/app"
		d := f.pushImage(t, repo)
		f.cosignSign(t, f.release, repo, d, true)
		verdict := verify(t, v, repo, d)
		wantTrusted(t, verdict, false)
		if verdict.Mode != policy.ModeQuarantine || !strings.Contains(verdict.Reason, "required signers: alpha") {
			t.Errorf("verdict: %s", dump(verdict))
		}
		f.notationSign(t, f.alpha, repo, d)
		verdict = verify(t, v, repo, d)
		wantTrusted(t, verdict, true)
		if strings.Join(verdict.Signers, ",") != "alpha,release" {
			t.Errorf("signers %v", verdict.Signers)
		}
	})
}

func testVerifyErrors(t *testing.T, f *fixture) {
	v := f.verifier(t, f.cfg)
	d := f.pushImage(t, "elsewhere/app")
	verdict := verify(t, v, "elsewhere/app", d)
	if verdict.Policy != "" || verdict.Trusted || verdict.Mode != "" {
		t.Errorf("no policy: %s", dump(verdict))
	}
	_, err := v.Verify(context.Background(), "team/missing", digest.FromString("nothing"))
	if !errors.Is(err, trust.ErrNotFound) {
		t.Errorf("missing manifest: got %v, want ErrNotFound", err)
	}
}

func testCache(t *testing.T, f *fixture) {
	repo := "team/cache"
	d := f.pushImage(t, repo)
	f.cosignSign(t, f.release, repo, d, true)
	f.cosignSign(t, f.release, repo, d, false)
	f.notationSign(t, f.alpha, repo, d)

	c := &httpContent{base: f.c.base}
	now := time.Unix(1_800_000_000, 0)
	// trust.New provisions its own copy of f.cfg, whose slices the other
	// subtests share (provisioning a copy here would write them); the cache
	// lives for the default TTL.
	var defaults config.Trust
	defaults.Provision()
	v, err := trust.New(f.cfg, c, trust.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	first := verify(t, v, repo, d)
	wantTrusted(t, first, true)
	cold := c.calls.Swap(0)
	second := verify(t, v, repo, d)
	warm := c.calls.Swap(0)
	if warm >= cold {
		t.Errorf("cached verification made %d requests, cold %d", warm, cold)
	}
	first.Time, second.Time = time.Time{}, time.Time{}
	if dump(first) != dump(second) {
		t.Errorf("cached verdict differs:\n%s\n%s", dump(first), dump(second))
	}
	now = now.Add(defaults.CacheTTL.D() + time.Second)
	verify(t, v, repo, d)
	if expired := c.calls.Swap(0); expired != cold {
		t.Errorf("after the TTL: %d requests, want %d", expired, cold)
	}
}
