// Package admission applies trust policies to the registry's traffic: it
// rejects tagging unsigned content in enforce mode, withholds quarantined
// content from pulls, asks external admission webhooks, records verdicts,
// and serves the verdict API. It reads content through the registry's own
// storage; the cryptography is in package trust.
package admission
