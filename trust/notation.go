package trust

import (
	"context"
	"fmt"

	"github.com/notaryproject/notation-go"
)

// artifactHost is the registry part of the references handed to
// notation-go; its trust policies apply to every scope ("*"), so the host
// only has to be well-formed.
const artifactHost = "portcullis.invalid"

// verifyNotation checks a Notation envelope (JWS or COSE) against each of
// the rule's identities with notation-go at the strict level: integrity,
// authenticity against the trust stores and trusted identities, expiry,
// authentic timestamp and revocation; then that its signed target is t.
func verifyNotation(ctx context.Context, r *rule, repo string, aliases []string, t targetInfo, envelope []byte, mediaType string) result {
	if len(r.identities) == 0 {
		return invalid("the policy trusts no Notation identity")
	}
	opts := notation.VerifierVerifyOptions{
		ArtifactReference:  artifactHost + "/" + repo + "@" + t.digest.String(),
		SignatureMediaType: mediaType,
	}
	var failures []failure
	identity := ""
	for _, id := range r.identities {
		outcome, err := id.verifier.Verify(ctx, t.descriptor(), envelope, opts)
		if outcome != nil && outcome.EnvelopeContent != nil && len(outcome.EnvelopeContent.SignerInfo.CertificateChain) > 0 {
			identity = outcome.EnvelopeContent.SignerInfo.CertificateChain[0].Subject.String()
		}
		if err != nil {
			failures = append(failures, failure{id.name, err.Error()})
			continue
		}
		out := result{signer: id.name, identity: identity}
		md, err := outcome.UserMetadata()
		if err != nil {
			out.reason = err.Error()
			return out
		}
		named, ok := md[RepositoryAnnotation]
		switch {
		case ok && !boundTo(named, repo, aliases):
			out.reason = fmt.Sprintf("signature is bound to repository %q, not %q", named, repo)
			return out
		case !ok && r.requireBinding:
			out.reason = fmt.Sprintf("signature lacks the %s annotation the policy requires", RepositoryAnnotation)
			return out
		}
		out.valid = true
		out.reason = "verified by identity " + id.name
		return out
	}
	res := invalid("not verified by a trusted identity: %s", summarize(failures))
	res.identity = identity
	return res
}
