// Command cache measures Portcullis's pull-through cache on this machine in
// one run, against distribution v3.1.2 as the upstream and as a proxy:
//
//   - warm hit: pulls of an image through the filled cache, within tagTTL,
//     against pulls of the same image pushed to a Portcullis with no cache,
//     taking turns (target: at most 1.1 times as long);
//   - cold miss: the first pull through an empty cache against the pull
//     straight from the upstream (target: at most 1.3 times as long), and
//     the time to the first byte of the first layer (target: under 1 s,
//     for a 64 MiB and a 512 MiB layer);
//   - the same cold miss through distribution's registry in proxy mode,
//     and the peak RSS of both caching processes over it.
//
// The upstream is distribution's registry on the filesystem, anonymous,
// seeded with random layers by this program. Each run of each image gets
// fresh registry processes with fresh data directories; the steps of a run
// rotate from run to run. The pull client is go-containerregistry's remote
// package in this process: the manifest, then the config and every layer at
// once, read to io.Discard with their digests verified. It prints a Markdown
// table of the medians.
//
// Run it from the repository root:
//
//	go run ./bench/cache -n 3
//
// See bench/README.md ("Pull-through cache") for what it measures and the
// last results.
package main
