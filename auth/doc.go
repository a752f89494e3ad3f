// Package auth decides who may do what in the registry: subjects (users,
// group members, robots, anonymous clients), the actions pull, push and
// delete, ordered access rules in which a deny always wins, and tag rules
// that restrict creating, moving and deleting tags. Rules name repositories
// and tags in the grammar of package policy.
//
// Every decision names the rule that made it, so an operator can ask why
// (Policy.Explain). A grant never exceeds what was requested.
//
// The package is pure: no I/O, no clock, no logging. It must not import
// net/http, os, log/slog, the token service (auth/token) or distribution;
// it imports only the standard library, the config types and the policy
// grammar (repository patterns and tag globs, package policy).
package auth
