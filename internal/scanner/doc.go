// Package scanner runs the built-in vulnerability scanner inside the
// registry: it loads the vulnerability database imported as an OCI artifact
// in the reserved repository portcullis/vulndb, scans each image manifest
// pushed (a bounded worker pool, each layer indexed once through a cache in
// the metadata database), stores the report, a CycloneDX SBOM and the
// package inventory as referrers of the image, and serves them.
package scanner
