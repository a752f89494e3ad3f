// Package gc is the garbage collector: it deletes what no tag reaches
// (untagged manifests, the referrers of deleted subjects, unused blobs,
// abandoned uploads) and the tags retention policies do not keep, while
// every replica goes on serving.
//
// The push-versus-sweep race (a client learns that a blob exists, skips
// its upload, then pushes a manifest that refers to it) is closed with
// objects in the storage backend that every replica sees: while a
// collection runs, each replica writes a marker for every digest it
// vouches for, then checks for a tombstone; the sweeper writes a tombstone
// for each candidate, then checks for a marker, and deletes only what is
// unmarked. Each writes before it reads the other's, so one of them always
// sees the other. The sweeper starts only when every live replica has
// acknowledged the run, after finishing the requests it began without
// markers.
//
// Layout below /portcullis/gc: lease (one collector at a time), run (the
// run in progress), replicas/<id> (heartbeats), acks/<run>/<replica>,
// marks/<alg>/<hex>, tombstones/b/<alg>/<hex> (a blob) and
// tombstones/m/<repo>/<alg>/<hex> (a repository's manifest),
// reports/<id>.json. Pull times live in /portcullis/pulls/<repo>/<alg>/<hex>.
package gc
