// Package referrers implements the OCI distribution-spec 1.1 referrers API on
// top of distribution: an index of the manifests that name a subject, kept in
// the storage backend next to the repository, so that it survives restarts and
// every replica over the same backend sees it.
//
// Layout (below distribution's own root, beside _manifests and _layers):
//
//	/docker/registry/v2/repositories/<name>/_referrers/
//	└── subjects/<alg>/<subject hex>/
//	    └── <alg>-<referrer hex>     descriptor of the referrer (JSON)
//	└── _complete                    marker: the index covers every manifest
//
// One file per (subject, referrer) pair means concurrent pushes from several
// replicas never overwrite each other. A repository without the _complete
// marker (one written before the index existed, or restored from a backup of
// the blobs alone) is rebuilt from its manifests on the first referrers read.
//
// The package must not import internal/app or any HTTP server wiring.
package referrers
