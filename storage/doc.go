// Package storage is Portcullis's storage driver: an implementation of
// distribution's storagedriver.StorageDriver over the S3 API, written on
// github.com/minio/minio-go/v7 and proven against a real MinIO server with
// distribution's driver conformance suite.
//
// It must not import anything of Portcullis (neither internal/ nor the domain
// packages): the wiring in internal/app builds an Options from the storage
// section of the configuration and calls New. A test keeps it so.
//
// # Object key layout
//
// Every driver path maps to one object key under Options.Prefix; directories
// exist only as key prefixes. Uncommitted writers keep their state beside the
// data, under a "~pending" prefix that no driver path can name ('~' is outside
// storagedriver.PathRegexp), and List, Walk and Stat hide it:
//
//	<bucket>/
//	└── <prefix>/                                  Options.Prefix; "" is the bucket root
//	    ├── docker/registry/v2/                    distribution's layout (registry/storage/paths.go)
//	    │   ├── blobs/sha256/ab/abcd…/data         one object per driver path
//	    │   └── repositories/<name>/
//	    │       ├── _layers/ _manifests/ …
//	    │       └── _uploads/<id>/
//	    │           ├── data                       the blob, once its Writer is committed;
//	    │           │                              before that, an S3 multipart upload of
//	    │           │                              the full parts written so far
//	    │           ├── startedat
//	    │           └── hashstates/sha256/<offset>
//	    └── ~pending/                              writer state, never listed
//	        ├── docker/registry/v2/repositories/<name>/_uploads/<id>/data
//	        │                                      the tail (< 5 MiB) not yet in a part, with
//	        │                                      metadata naming the multipart upload ID,
//	        │                                      its data object and the offset at which
//	        │                                      the tail starts, and distribution's hash
//	        │                                      state at the end of the tail
//	        └── ~data/<random>                     the data of a writer that sent parts:
//	                                               first its multipart upload, then, once
//	                                               committed, the object an alias names
//
// # Writers
//
// A Writer buffers at most Options.PartSize bytes: each full buffer becomes
// one part of a multipart upload on the data key. Close (the end of one PATCH
// request) uploads what is buffered as a part when it reaches the S3 minimum
// of 5 MiB and otherwise stores it as the pending tail; a Writer reopened with
// append=true reads the tail back and lists the uploaded parts, so chunked
// uploads resume across requests and across replicas. Commit uploads the last
// part and completes the upload (or, for content that never filled a part,
// puts it in one request) and removes the tail; Cancel aborts the upload and
// removes the tail.
//
// # Uploads
//
// The driver knows distribution's layout (upload.go) and saves requests on
// each blob upload without depending on anything another replica could
// change: an upload with nothing written has no writer state (a resumed
// writer with none starts empty); the hash state distribution saves at each
// PATCH also rides in the pending tail, so the next request reads it with
// the tail instead of listing and reading hash states; the hash state at
// offset 0, those written after the upload's commit and those of a PATCH
// within a minute of the upload's start (whose startedat then shows the
// upload's activity to garbage collection) are not stored; Stat
// and Move of upload data this process has just committed use what the
// commit returned; a missing blob or link is reported without a listing
// (they are never directories), and an upload's directory is deleted
// without asking whether it is an object.
//
// Every request that resumes an upload reads its startedat, then its
// pending tail. The tail also carries the content of startedat, so one GET
// of the tail answers both (every delete of the directory removes writer
// state first; a tail that outlives its upload, stored by a request that
// resumed the upload before another deleted it, answers for it until
// DeleteUnnamedData removes it, and the digest is still checked at the
// commit of what it holds); a request
// whose client's upload state says the upload is empty (UploadOffset)
// reads startedat alone. The tail lists the hash states stored for the
// upload too, so that the delete of the directory after a held commit
// names every key in it instead of listing it. A tail an older driver
// stored carries neither: startedat is read, the directory listed.
//
// The commit of an upload that never filled a part (at most 1 MiB) stores
// nothing: it holds the data in memory (held.go), distribution's checks
// read it there, and Move puts it at the blob's path in one request, where
// a stored commit costs a PUT, a COPY and a DELETE. The upload's pending
// tail stays until its directory is deleted, in the same request as the
// rest, with no listing of writer state. The client has no answer before
// the blob is stored; a process that dies meanwhile leaves the upload as it
// was before the PUT. A commit whose checks, move or link fail (distribution
// then cancels the writer) is stored as it would have been.
//
// # Aliases
//
// A Writer on a path whose last segment is "data" (distribution's blob and
// upload data) that sends parts uploads them to a fresh data object under
// ~pending/~data, not to its path's key. Commit stores at the path a small
// alias object whose metadata names the data object and its size, then
// completes the upload: a data object exists only once an alias names it.
// Move of an alias copies the small object, so a committed upload becomes a
// blob (distribution commits uploads by Move) without its data being
// written a second time. Every read follows an alias: GetContent, Reader
// and RedirectURL read the data object, Stat and Walk report its size (Walk
// sends a HEAD for each object named data as small as an alias). Delete and
// DeleteFiles remove an alias first and its data object after, so that a
// failure in between leaves data nothing names rather than an alias without
// data; they send a HEAD only for paths named data. Objects a Writer never
// sent as parts (under Options.PartSize), and those of Writers on other
// paths, are stored at their path; Move of an alias to a path not named
// data copies the data there.
//
// Data that no alias names (a process that died between an alias and its
// data, two uploads of one blob moved to the same path, a delete that failed
// half-way) is removed by DeleteUnnamedData, which garbage collection calls.
//
// # Caveats
//
//   - A process that dies while a Writer has uploaded parts it has not yet
//     recorded leaves a multipart upload that nothing refers to. Give the
//     bucket a lifecycle rule that aborts incomplete multipart uploads after a
//     few days.
//   - A data object that nothing names (a Move or Commit that replaced an
//     alias, a delete that failed between an alias and its data) stays
//     until DeleteUnnamedData removes it; the lifecycle rule above does not.
//   - A Commit whose multipart upload fails to complete removes the alias
//     it stored: the path then holds nothing, not what it held before.
//   - A driver without aliases (an older Portcullis) reads an alias as the
//     68 bytes it holds. Replicas over one bucket must all run a driver
//     with aliases before any of them commits a large upload, and a bucket
//     that holds aliases cannot go back to such a driver.
//   - A hash state stored for an upload that its tail does not list (a
//     request that stored one, then failed to store the tail, and a client
//     that resumed the upload from the start) stays in the upload's
//     directory after the upload ends, until garbage collection removes
//     the directory as abandoned.
//   - A client that sends an upload state it was given earlier, with offset
//     0, after a PATCH that stored a part (a replayed Location) resumes the
//     upload empty: its next tail replaces the one that named the part's
//     multipart upload, which the lifecycle rule above then removes, and a
//     PUT of the old digest fails the commit, which cancels the upload
//     (distribution alone would answer 416 and keep it).
//   - An older Portcullis finds no writer state for an upload whose POST
//     this driver served (nothing written yet) and fails the upload's next
//     request; the client starts the upload again. Finish rolling upgrades
//     before relying on uploads that cross replicas.
//   - MinIO refuses an object key below another object ("a" and "a/b"), an
//     S3 bucket accepts both; distribution's layout never creates such pairs.
//   - MinIO denies (AccessDenied) a write that needs a directory which a
//     concurrent delete is removing as empty; the driver tries such a write
//     again three times (see retryDenied), so a denial by the bucket's
//     policy reaches the caller 70 ms late.
package storage
