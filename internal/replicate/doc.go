// Package replicate runs the replication rules of the configuration: push
// rules copy what is pushed here to another site, pull rules fetch from
// another site on a schedule, with the remote client and the graph copy of
// package replication.
//
//   - Push rules with trigger event consume the "replication" outbox, which
//     the front handler fills beside the scanner's: each tag push copies the
//     image with its referrers, the tag last; a referrer (a signature, an
//     SBOM) pushed later copies again every tag of its subject; a tag
//     deletion is replicated when the rule says so. Events pushed by one of
//     the accounts other sites replicate with are skipped, so rules in both
//     directions do not loop.
//   - Delivery is at least once: a failure worth retrying keeps the event,
//     retried with backoff; a refusal by the destination (its admission
//     denied the image, or found it invalid) is recorded with the
//     destination's reason and the event is done. A later event for the
//     same image (a signature) tries again. A remote that failed as
//     unavailable is pinged every second (its circuit breaker lets one
//     call through every openFor); once it answers, every event kept for
//     a retry is tried again at once, not after its own backoff.
//   - Every push rule reconciles every reconcileEvery (and a schedule rule
//     every interval): the tags here that match are copied where they
//     differ, which repairs what events missed. A pull rule lists the
//     remote's tags of the repositories it names and of those in the
//     remote's catalog its patterns match, and fetches those that differ,
//     and the referrers (signatures, SBOMs) the remote has and this
//     registry lacks.
//   - The scanner's own artifacts (reports, inventories, its SBOMs) are
//     never copied: each site scans what arrives itself. Scheduled work holds a
//     lease per rule in the storage backend, so one replica runs it.
//   - Each event rule has an outbox of its own (in the metadata database),
//     which the shared one's events are passed on to, with its own retries
//     and backoff: a remote that is down or hangs delays no other rule.
//   - The failures per image and the last run of each rule are objects in
//     the storage backend, the same for every replica; pending events and
//     the last success are this replica's.
//
// Caveats: content a pull rule fetches is written to storage directly and
// recorded as events (the scanner scans it, push rules may pass it on); it
// is read through the pull gates like any image, but admission does not
// see it as a push. A repository gone from the remote's catalog keeps its
// tags here, deletes or not.
//
// The package must not import internal/app or any HTTP wiring.
package replicate
