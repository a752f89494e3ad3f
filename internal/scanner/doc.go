// Package scanner runs the built-in vulnerability scanner inside the
// registry: it loads the vulnerability database imported as an OCI artifact
// in the reserved repository portcullis/vulndb, scans each image manifest
// pushed (a bounded worker pool, each layer indexed once through a cache in
// the metadata database), stores the image's package inventory, a
// CycloneDX SBOM and the report as referrers of the image, and reads back
// the newest report and SBOM for internal/api (Document). It writes to storage directly, through the same
// repository middleware as distribution, not through the /v2/ handler,
// which refuses the report's and the inventory's artifact types from
// clients (artifact.Reserved): the newest of them found in storage is the
// scanner's own.
//
// Work arrives through the scan outbox (internal/outbox), where the front
// handler records each successful push, tag and delete: an entry stays
// until its image is scanned or its verdict "scan failed" is recorded, so
// pushes made before a database is loaded, or before a restart, are
// scanned later. A pushed index queues its images. The verdict "scan
// failed" and its reason are stored like the reports, as a referrer of the
// image (artifact.ArtifactTypeFailure, reserved): the newest of an image's
// report and failure is its verdict, and the metadata database only caches
// it.
//
// The Service composes its jobs: the metadata store (metaStore), the
// database watcher (dbWatcher, which loads portcullis/vulndb:latest and
// polls for a new one), the reconciler, and the outbox consumer with the
// scan workers.
//
// A new database re-matches every scanned image from its inventory,
// without reading its layers again. The metadata database keeps the
// inventories for that, but only as a copy: storage holds the truth. A
// reconcile pass, once a database is loaded, after each new one and then
// hourly, walks every manifest of every repository, tagged or not (the
// storage driver's Walk, through distribution's ManifestEnumerator). It
// queues the images without a report, which repairs what the outbox
// missed, and reads back the inventory referrer of each scanned image the
// metadata database does not know (it was lost, or another replica
// scanned the image), re-matches it and remembers it. It decides from the
// referrers in storage, so it works with an empty metadata database and
// never scans an image with a report and an inventory again; an image
// scanned before inventories were stored is scanned once more.
package scanner
