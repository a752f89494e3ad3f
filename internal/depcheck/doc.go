// Package depcheck holds no code: its test keeps the module's dependencies
// pointing one way (cmd → internal/app → domain packages → config types),
// keeps each domain package to its job, and requires a doc comment on every
// package. The rules are one table in depcheck_test.go.
package depcheck
