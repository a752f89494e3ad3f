// Package e2e runs the built registry binary against real clients: the OCI
// conformance suite, crane, oras, regctl, skopeo, podman and the docker CLI.
// Every tool is required: a missing tool fails the test (run
// scripts/install-tools.sh), it never skips.
package e2e
