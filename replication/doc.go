// Package replication talks to other registries ("remotes"): the one
// client that the pull-through cache and replication use to read
// manifests, blobs and referrers from them and to write to them, and the
// copy of an image's whole graph from one registry to another.
//
// A Remote is built from Options (the remote's URL, credentials read from
// files, TLS and timeout settings) and speaks the OCI distribution API,
// read side only:
//
//   - HeadManifest and GetManifest, asking for OCI manifests and indexes and
//     Docker schema 2 manifests and lists (never schema 1). GetManifest keeps
//     the bytes as received, bounded by MaxManifestSize, and checks them
//     against the digest asked for and the Docker-Content-Digest header.
//   - HeadBlob and GetBlob, following redirects to blob storage. GetBlob
//     streams: the caller verifies the digest while reading.
//   - Referrers, with the OCI 1.1 referrers API or, on remotes without it,
//     the referrers tag schema.
//
// The write side: HeadBlob, MountBlob (cross-repository mount), UploadBlob
// (one streamed PUT up to ChunkSize, PATCH chunks beyond: a blob is never
// held whole in memory), PutManifest by digest or tag (the bytes as they
// are), DeleteTag and Tags. A 403 DENIED answer to a write (the remote's
// admission refused it) wraps ErrDenied and keeps the remote's reason;
// Permanent tells such refusals from failures worth retrying.
//
// A Copier copies a manifest from a Source (a Remote, or this registry's
// storage behind the same interface) to a Destination: blobs (HEAD, then
// mount, then upload), an index's children before the index, manifests
// by digest, every referrer recursively (the referrers API and cosign's
// <alg>-<hex>.sig/.att/.sbom tags), and the tag last, so that the
// destination's admission sees the signatures before the tag exists.
//
// Authentication follows the registry token specification: anonymous
// first; on a 401 with a Bearer challenge, a token from the challenge's
// realm (with the credentials when configured), cached per scope until 30
// seconds before it expires and fetched once for concurrent callers; on a
// Basic challenge, the credentials. The scheme a remote asked for is
// remembered, so later requests carry credentials at once. Credentials and
// tokens never appear in errors or logs.
//
// Errors wrap the sentinels of errors.go (ErrNotFound, ErrUnauthorized,
// ErrUnavailable, ErrDigestMismatch, ErrTooLarge) and name the remote,
// what was asked, and the upstream's status and OCI error. A circuit
// breaker counts consecutive failures that mean the remote is unavailable;
// at Options.FailureThreshold it fails calls at once for Options.OpenFor,
// then lets one trial call through. State reports it.
//
// Caveats:
//   - Redirects are followed by net/http, which drops the Authorization
//     header on a redirect to another host; Options.Observe sees one
//     request per call, redirects included. A redirect, and a token realm,
//     may not lead to a loopback address (unless the remote is on one), a
//     link-local, unspecified or multicast address (the cloud metadata
//     service), nor from https to http: the call fails with ErrUnavailable
//     (a redirect) or ErrUnauthorized (a realm). Host names are not
//     resolved for this check.
//   - A token is cached under the scope of the request that needed it,
//     also when the challenge named another scope.
//   - Some remotes (Docker Hub) answer a repository that does not exist,
//     or that the credentials may not read, with 401 after the token flow:
//     that is ErrUnauthorized, not ErrNotFound.
//   - Reading a body (GetBlob's in particular) is not counted by the
//     breaker: only getting an answer is.
//
// The package must not import anything under internal/ (the server's
// internals); it depends on the standard library, go-digest, the OCI
// image-spec types and x/sync only.
package replication
