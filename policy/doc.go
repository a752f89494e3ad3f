// Package policy is the grammar shared by every per-repository policy of the
// registry: repository patterns (Pattern, Patterns), tag globs (Glob), the
// modes of trust and scan policies (Mode), and the rule that the first
// policy whose pattern matches a repository applies (Set).
//
// Access rules, tag rules, trust policies, scan policies and admission
// webhooks all choose their repositories through this package, so a pattern
// means the same everywhere and is rejected with the same message.
//
// The package imports only the standard library.
package policy
