// Package outbox is a durable, ordered queue of registry events kept in the
// node's metadata database (bbolt). The front handler appends each
// successful manifest push, tag and delete; a Dispatcher hands the entries
// to one consumer in order and deletes each entry only once the consumer is
// done with it, so a restart or a crash loses nothing that was appended.
//
// Layout: one bucket per consumer, named "outbox/<name>". Keys are the
// bucket's bbolt sequence numbers as 8 big-endian bytes, so byte order is
// append order; values are Events as JSON.
//
// Caveats:
//   - Delivery is at least once: a consumer sees an entry again after a
//     crash between finishing its work and the deletion, so it must treat a
//     repeated event as a no-op.
//   - The front handler appends through a Recorder, which commits in the
//     background: an event is durable a few milliseconds after its request
//     is answered, and a crash in between loses it (as a failed append
//     does), for the reconcile pass below.
//   - The queue lives on this node only. What it misses (an append that
//     failed, a deleted metadata file) is for the consumer's periodic
//     reconcile pass to repair from the storage backend.
//   - Memory does not grow with the queue: entries are read in small
//     batches, and the dispatcher keeps state only for the entries in
//     flight and a bounded number of entries waiting to be retried.
//
// The package must not import internal/app or any HTTP wiring.
package outbox
