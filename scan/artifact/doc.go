// Package artifact stores what the scanner produces and consumes as OCI artifacts, so that
// it lives in the storage backend next to the images (DESIGN.md §3) and travels with them
// on replication:
//
//	vulnerability database   ArtifactTypeVulnDB: one zip layer per ecosystem (osv.dev's
//	                         all.zip), a DBConfig config; pushed to a reserved repository
//	scan report              ArtifactTypeReport, subject = the image: the scan.Report JSON
//	SBOM                     ArtifactTypeSBOM, subject = the image: CycloneDX 1.5 JSON
//	inventory                ArtifactTypeInventory, subject = the image: scan.StoredInventory,
//	                         so a new database re-matches the image without its layers
//
// Builders (PackDB, ReportArtifact, SBOMArtifact, InventoryArtifact) return an Artifact: the
// manifest bytes, its descriptor and its blobs, to push blobs first and the manifest last.
// Readers (LoadDB, ReadReport, ReadSBOM, ReadInventory) take the manifest bytes and a Fetch
// function for blobs; they treat both as untrusted: every blob is checked against its
// descriptor's size and digest, and every size is bounded before anything is read.
//
// The database version. Every report names its database by vulndb.DB.Digest, a digest of
// the ecosystems' all.zip contents, not by the artifact's manifest digest: the same bundle
// then has the same version whether the CLI loaded it from a directory or the server from
// the registry, and re-packing it (another created time) does not change it. PackDB writes
// it into the DBConfig and the AnnotationDBDigest annotation, and LoadDB checks that the
// layers it loaded give that digest.
//
// artifact must not import internal/... or the server; it imports scan, its sub-packages,
// the OCI image-spec types and the standard library.
package artifact
