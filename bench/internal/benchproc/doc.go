// Package benchproc finds and starts the processes the benchmarks measure
// or need beside them: the Portcullis binary (built from this module when
// no path is given), the pinned tools scripts/install-tools.sh builds
// (distribution's registry, MinIO), and a MinIO server on loopback.
//
// MinIO is AGPL: this package runs its binary and never imports it.
//
// It must not import anything of Portcullis: the benchmarks measure the
// product from the outside.
package benchproc
