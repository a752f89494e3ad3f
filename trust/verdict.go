package trust

import (
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/policy"
)

// Kind is the format of a signature.
type Kind string

// The signature formats the Verifier finds.
const (
	// KindCosignBundle is a sigstore bundle attached as an OCI referrer
	// (cosign 3, artifactType application/vnd.dev.sigstore.bundle.v0.3+json).
	KindCosignBundle Kind = "cosign-bundle"
	// KindCosignLegacy is a simple-signing payload in the sha256-<hex>.sig tag.
	KindCosignLegacy Kind = "cosign-legacy"
	// KindNotationJWS is a Notation signature in a JWS envelope.
	KindNotationJWS Kind = "notation-jws"
	// KindNotationCOSE is a Notation signature in a COSE envelope.
	KindNotationCOSE Kind = "notation-cose"
)

// Verdict is the outcome of verifying one manifest in one repository.
type Verdict struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	// Policy names the trust policy that applied; empty when no policy
	// matches the repository (then Trusted is false and Mode is empty: the
	// caller does not gate the content).
	Policy string `json:"policy,omitempty"`
	// PolicyVersion is a hash of the policy and the key and certificate
	// material it trusts; it changes whenever either does.
	PolicyVersion string      `json:"policyVersion,omitempty"`
	Mode          policy.Mode `json:"mode,omitempty"`
	// Signed reports that at least one signature was found for the digest
	// or for an index that contains it, valid or not (attestations are not
	// signatures).
	Signed bool `json:"signed"`
	// Trusted reports that the valid signatures satisfy the policy.
	Trusted bool `json:"trusted"`
	// Signers are the trusted signers with a valid signature, sorted.
	Signers []string `json:"signers,omitempty"`
	// Signatures lists the signatures examined: those checked by an earlier
	// verification first, then at most 64 new ones.
	Signatures []Signature `json:"signatures,omitempty"`
	// Unexamined counts the signatures left for a later verification,
	// because this one had checked as many new signatures as it may.
	Unexamined int `json:"unexamined,omitempty"`
	// Reason says in one line why the content is or is not trusted; it is
	// safe to show to the client (in a 403 message).
	Reason string `json:"reason"`
	// Time is when the verdict was made.
	Time time.Time `json:"time"`
}

// Signature is one signature found for a digest.
type Signature struct {
	Kind Kind `json:"kind"`
	// Digest identifies the signature: the referrer manifest's digest, or for
	// the legacy layout the signature manifest's digest.
	Digest digest.Digest `json:"digest"`
	// Layer is the digest of the simple-signing payload (legacy layout only;
	// one manifest may hold several signatures).
	Layer digest.Digest `json:"layer,omitempty"`
	// Subject is the digest the signature was verified against: the digest
	// asked about, or an index that contains it.
	Subject digest.Digest `json:"subject"`
	// Signer is the configured name (trust.keys or trust.identities) whose
	// key or trust policy verified the signature; empty if none did.
	Signer string `json:"signer,omitempty"`
	// Identity is the key ID (SHA256:<base64> of the public key) or the
	// certificate subject that made the signature, when known.
	Identity string `json:"identity,omitempty"`
	// Valid reports that the signature verified and binds Subject.
	Valid bool `json:"valid"`
	// Reason says why the signature is valid or not.
	Reason string `json:"reason"`
	// attestation marks a bundle that holds an attestation: it is not a
	// signature and is left out of verdicts.
	attestation bool
}
