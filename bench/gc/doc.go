// Command gc compares Portcullis's garbage collector (`registry gc`) with
// distribution v3.1.2's (`registry garbage-collect --delete-untagged`) on
// the same dataset, on the filesystem and on MinIO, in one run:
//
//   - the dataset: N manifests over M blobs in repositories of a few dozen
//     manifests, written straight into distribution's storage layout (a
//     directory, and a bucket of a MinIO server this program starts); half
//     of the manifests are tagged, a quarter untagged (a tag moved away)
//     and a quarter deleted by digest, and a tenth of the blobs are layers
//     shared all over the registry; a fresh copy for every collector run;
//   - each collector's wall time, mark time, sweep rate (manifests and
//     blobs deleted per second of sweep) and peak RSS (the child's
//     ru_maxrss), and what it left: the blobs and manifests remaining,
//     checked against the live set the dataset defines;
//   - on S3, the latency of manifest PUTs to a serving Portcullis while
//     `registry gc` runs in a loop against the same bucket, against the
//     same PUTs with no collection.
//
// The binaries are flags; only Portcullis is built (from ./cmd/registry)
// when none is given. It prints Markdown tables of the medians.
//
// Run it from the repository root:
//
//	go run ./bench/gc -small      # 1,000 manifests, 5,000 blobs
//	go run ./bench/gc             # 10,000 manifests, 50,000 blobs
//
// See bench/README.md ("Garbage collection") for what it measures and the
// last results.
package main
