// Package trust verifies the signatures stored beside content in the
// registry: cosign signatures made with public keys (sigstore bundles that
// cosign 3 attaches as OCI referrers, and the legacy sha256-<hex>.sig tag
// layout with simple-signing payloads) and Notation signatures (JWS and COSE
// envelopes) checked against X.509 trust stores and a Notation trust policy.
//
// A Verifier is built from the trust section of the configuration. Per
// repository pattern, a policy names the signers it trusts (cosign keys and
// Notation identities), whether any one of them suffices or all must have
// signed, and the admission mode (enforce, quarantine or audit) that the
// caller applies to the Verdict. The Verifier reads content only through the
// small Content interface, which the server implements over its storage.
//
// The cryptography is done by libraries built for verification:
// sigstore-go for bundles, sigstore's pkg/signature for simple-signing
// payloads, and notation-go with notation-core-go for Notation envelopes.
// This package parses only the OCI manifests that carry signatures and the
// simple-signing JSON, and checks what the signature binds: the digest being
// verified (or an index that lists it: a signature on an index covers its
// children, see VerifyWithParents) and, where the signature names one, the
// repository. Bundles whose in-toto predicate is not cosign's signing
// predicate are attestations (SBOMs, provenance) and do not count.
//
// Caveats:
//   - Repository binding. A legacy cosign signature names the repository it
//     was made for (critical.identity.docker-reference) and is invalid
//     anywhere else. A cosign 3 bundle and a Notation signature bind only the
//     digest: copied into another repository, they count there if that
//     repository's policy trusts the signer, unless they carry the signed
//     annotation dev.portcullis.repository (RepositoryAnnotation) naming
//     another repository, or the policy sets requireRepositoryBinding, which
//     makes the annotation mandatory.
//   - Notation signatures are always checked at Notation's strict level
//     (the permissive and audit levels accept expired and untrusted
//     certificates); only the revocation check can be relaxed, for air gaps.
//   - Results are cached per signature, subject, repository and policy
//     version for trust.cacheTTL; a certificate that expires or is revoked
//     within that window is noticed when the entry expires.
//   - Cosign keyless (Fulcio certificate) signatures are not supported: the
//     registry sits in an air gap and trusts keys.
//
// The package must not import anything under internal/, nor scan,
// replication, storage or auth, nor cosign's own packages (their command
// tree pulls in every KMS and cloud SDK). It imports the config types and,
// for repository patterns and modes, policy.
package trust
