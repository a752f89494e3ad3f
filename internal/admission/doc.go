// Package admission decides what the registry's traffic may do under the
// trust and scan policies: it rejects tagging unsigned or failing content
// in enforce mode (whatever the manifest carries; signature tags only when
// they hold signatures, ExemptTag), withholds quarantined content and, in
// enforce mode, content no longer trusted from readers on every route
// (manifests, blobs through an index of the repository's manifests,
// referrers), asks external admission webhooks (the Review, with the
// signature verdict and the scan summary), records verdicts, and answers
// the verdicts internal/api serves. It reads content through the
// registry's own storage; the cryptography is in package trust and the
// scan results come from package scan's types. It imports no other
// internal package: the HTTP edge calls it, not the other way round.
package admission
