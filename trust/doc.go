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
// verified and, for cosign, the repository it was made for.
//
// Caveats:
//   - A Notation signature binds the target digest, size and media type but
//     not the repository; a Notation signature copied into another
//     repository is valid there if, and only if, that repository's policy
//     trusts its signer. cosign signatures name the repository and are
//     rejected when copied.
//   - Results are cached per signature, subject, repository and policy
//     version for trust.cacheTTL; a certificate that expires or is revoked
//     within that window is noticed when the entry expires.
//   - Cosign keyless (Fulcio certificate) signatures are not supported: the
//     registry sits in an air gap and trusts keys.
//
// The package must not import anything under internal/, nor scan,
// replication or storage, nor cosign's own packages (their command tree
// pulls in every KMS and cloud SDK). It imports the config types and, for
// repository patterns, auth.
package trust
