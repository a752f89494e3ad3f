// Package scanner runs the built-in vulnerability scanner inside the
// registry: it loads the vulnerability database imported as an OCI artifact
// in the reserved repository portcullis/vulndb, scans each image manifest
// pushed (a bounded worker pool, each layer indexed once through a cache in
// the metadata database), stores the report and a CycloneDX SBOM as
// referrers of the image, and serves them.
//
// Work arrives through the scan outbox (internal/outbox), where the front
// handler records each successful push, tag and delete: an entry stays
// until its image is scanned or its verdict "scan failed" is recorded, so
// pushes made before a database is loaded, or before a restart, are
// scanned later. A pushed index queues its images. A reconcile pass, once
// a database is loaded and then hourly, walks every tag and queues the
// images without a report: it repairs what the outbox missed, and decides
// from the referrers in storage, so it works with an empty metadata
// database and never scans an image with a report again.
package scanner
