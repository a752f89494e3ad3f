// Command replicate measures Portcullis's cross-site replication between two
// Portcullis processes on this machine (sites A and B, on loopback, each on
// its own filesystem directory, or each on its own bucket of one MinIO
// server with -storage s3). Site B has token auth and one user, the account
// A's push rule replicates with; A has no auth and a push rule for repl/**
// to B. It compares the push rule with `crane copy` and `regctl image copy`
// from A to B, with the same account, in the same run:
//
//   - big: one 256 MiB image (four 64 MiB random layers). For the rule, the
//     time from the end of the push at A until B answers the tag; for each
//     peer, one copy of the same image, pushed to a repository of A no rule
//     matches.
//   - small: 200 images of three 4 KiB layers in 20 repositories. Their
//     blobs and manifests are pushed to A by digest (not timed); for the
//     rule, the time from the first of the 200 tag PUTs at A until B lists
//     all 200 tags; for the peers, 200 copies one after another (what an
//     operator's script does), and crane with four copies at once (xargs -P4).
//   - lag: images pushed at A at a steady rate; for each, the time from the
//     end of its push until B answers its tag (p50, p95, max).
//   - pending: B stopped, 10,000 tags PUT at A onto small manifests: A's
//     memory with the events pending, then B started again and the time until
//     every event is replicated, with A's memory meanwhile.
//
// Every sample of big and small gets a fresh pair of sites (new processes,
// new data), and the three ways of copying alternate, so that none copies
// into a site that already holds the data. It reports medians with min–max,
// the CPU time of A, B and the clients, peak RSS and the load average, as
// Markdown tables.
//
// Run it from the repository root:
//
//	go run ./bench/replicate -n 3
//	go run ./bench/replicate -workload small,lag -n 5
//
// See bench/README.md ("Replication") for what it measures and the last
// results.
package main
