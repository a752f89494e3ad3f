package trust

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// cosignSignPredicate is the in-toto predicate type of the statement that
// cosign 3 signs for an image; bundles with other predicates are
// attestations (SBOMs, provenance), not signatures.
const cosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"

// RepositoryAnnotation is the signed annotation that binds a cosign bundle
// (cosign sign -a) or a Notation signature (notation sign --user-metadata)
// to a repository. When present it must name the repository being verified.
const RepositoryAnnotation = "dev.portcullis.repository"

// ParseBundle decodes and structurally validates a sigstore bundle (JSON,
// media types v0.1 to v0.3). It does no cryptography.
func ParseBundle(data []byte) (*bundle.Bundle, error) {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("sigstore bundle: %w", err)
	}
	return &b, nil
}

// verifyBundle checks a sigstore bundle: signed by one of the rule's keys,
// over the target digest, a cosign signature rather than an attestation, and
// not bound to another repository.
func verifyBundle(r *rule, repo string, aliases []string, t targetInfo, data []byte) result {
	b, err := ParseBundle(data)
	if err != nil {
		return invalid("%v", err)
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return invalid("bundle: %v", err)
	}
	if vc.Certificate() != nil {
		return invalid("certificate-signed (keyless) bundles are not supported")
	}
	if vc.PublicKey() == nil {
		return invalid("bundle names no public key")
	}
	if len(r.keys) == 0 {
		return invalid("the policy trusts no cosign key")
	}
	raw, err := hex.DecodeString(t.digest.Encoded())
	if err != nil {
		return invalid("target digest: %v", err)
	}
	policy := verify.NewPolicy(verify.WithArtifactDigest(string(t.digest.Algorithm()), raw), verify.WithKey())

	var failures []failure
	for _, k := range r.keys {
		var firstErr error
		for _, kv := range k.verifiers {
			res, err := verifyBundleWith(r, b, kv, policy)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			out := result{signer: k.name, identity: k.id}
			if st := res.Statement; st != nil {
				if st.GetPredicateType() != cosignSignPredicate {
					out.reason = fmt.Sprintf("bundle is an attestation (%s), not a signature", st.GetPredicateType())
					out.attestation = true
					return out
				}
				for _, s := range st.GetSubject() {
					named := ""
					if a := s.GetAnnotations(); a != nil {
						if v, ok := a.GetFields()[RepositoryAnnotation]; ok {
							named = v.GetStringValue()
							if named == "" {
								named = "(non-string)"
							}
						}
					}
					if named != "" && !boundTo(named, repo, aliases) {
						out.reason = fmt.Sprintf("signature is bound to repository %q, not %q", named, repo)
						return out
					}
					if named == "" && r.requireBinding {
						out.reason = fmt.Sprintf("signature lacks the %s annotation the policy requires", RepositoryAnnotation)
						return out
					}
				}
			} else if r.requireBinding {
				out.reason = fmt.Sprintf("message-signature bundles cannot carry the %s annotation the policy requires", RepositoryAnnotation)
				return out
			}
			out.valid = true
			out.reason = "verified with key " + k.name
			return out
		}
		failures = append(failures, failure{k.name, firstErr.Error()})
	}
	return invalid("not verified by a trusted key: %s", summarize(failures))
}

// verifyBundleWith runs sigstore-go's verifier with one trusted key. Without
// requireTlog the bundle is verified offline: no transparency log entry and
// no timestamps are needed (or used) for a key signature.
func verifyBundleWith(r *rule, b *bundle.Bundle, kv signature.Verifier, policy verify.PolicyBuilder) (*verify.VerificationResult, error) {
	key := root.NewExpiringKey(kv, time.Time{}, time.Time{})
	keys := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
	var (
		material root.TrustedMaterial = keys
		opts                          = []verify.VerifierOption{verify.WithNoObserverTimestamps()}
	)
	if r.requireTlog {
		material = root.TrustedMaterialCollection{r.trustedRoot, keys}
		opts = []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}
	}
	sv, err := verify.NewVerifier(material, opts...)
	if err != nil {
		return nil, err
	}
	return sv.Verify(b, policy)
}

// failure is why one trusted signer did not verify a signature.
type failure struct{ signer, err string }

// summarize lists the failures, naming signers that failed alike together:
// "release, ed: <error>; rsa: <other error>".
func summarize(fs []failure) string {
	var order []string
	bySignerErr := map[string][]string{}
	for _, f := range fs {
		if _, ok := bySignerErr[f.err]; !ok {
			order = append(order, f.err)
		}
		bySignerErr[f.err] = append(bySignerErr[f.err], f.signer)
	}
	parts := make([]string, len(order))
	for i, e := range order {
		parts[i] = strings.Join(bySignerErr[e], ", ") + ": " + e
	}
	return strings.Join(parts, "; ")
}
