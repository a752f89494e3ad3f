// Package cache serves pull-through caches: namespaces of the registry whose
// repositories are filled on demand from another registry (a remote) and are
// read-only to clients.
//
// A manifest is fetched byte for byte (an index keeps its digest and is
// stored before its children), with its referrers (signatures, SBOMs,
// attestations: the referrers API and cosign's tag schema), before its tag is
// set, so that trust policies see the signatures before anyone reads the
// tag. A tag is checked against the remote with one HEAD at most once per
// tagTTL; while the remote fails, the last tag is served for staleIfError.
// A pull by digest that is cached never calls the remote.
//
// A missing blob is fetched once per replica however many clients ask for
// it at once: the fetch is spooled to a local file that every waiting client
// reads while it grows, written to storage at the same time, detached from
// the clients (one hanging up does not stop it), and committed only when its
// digest matches. The last byte of a stream is held back until the digest is
// verified, so no client receives a whole blob that is wrong.
//
// Each cached image produces the event a push produces, once its blobs are
// all stored, so that it is scanned like a pushed image. Eviction removes
// manifests and tags, never blobs: garbage collection frees the blobs no
// other manifest uses.
//
// State shared by replicas (when a tag was last checked, when a manifest was
// last pulled) is small objects in the storage backend under
// /portcullis/cache, written at most once per interval.
package cache
