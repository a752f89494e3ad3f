// Package admission applies trust policies to the registry's traffic: it
// rejects tagging unsigned content in enforce mode, withholds quarantined
// content from pulls, asks external admission webhooks (the Review, with
// the signature verdict and the scan summary), records verdicts, and
// serves the verdict API. It reads content through the registry's own
// storage; the cryptography is in package trust.
package admission
