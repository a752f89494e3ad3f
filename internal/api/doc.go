// Package api is the registry's HTTP edge beside distribution's routes. It
// serves /api/v1/ (an image's trust verdict, newest vulnerability report and
// SBOM, to clients that may pull the repository), and it holds what the
// /v2/ front handler shares with it: the caller of a request, resolved once
// from its bearer token (Caller), and the one writer of OCI error bodies
// (WriteError).
//
// It must not import the packages whose answers it serves (admission,
// scanner): they are reached through the small interfaces defined here.
package api
