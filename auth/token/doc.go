// Package token is the registry's token service and the access controller
// that checks its tokens, following the Docker registry token
// specification (https://distribution.github.io/distribution/spec/auth/token/)
// and its OAuth2 variant.
//
//   - Service is the /token endpoint: it authenticates users (configuration
//     and htpasswd, bcrypt) and robot accounts (Robots, stored hashed in the
//     storage backend), rate-limits failed logins, asks the auth.Policy what
//     each requested scope may do and signs a short-lived JWT (ES256 or
//     RS256, with a kid header) carrying exactly that.
//   - AccessController verifies those JWTs for distribution's handlers
//     (it implements registry/auth.AccessController) and for our own routes.
//   - KeySet holds the active signing key and every key still accepted,
//     so keys rotate without downtime.
//   - Refreshes records every refresh token it issues (by jti, in the
//     storage backend) and is read on each use, so a token revoked by id,
//     by user or all at once stops working on every replica.
//   - Unknown users are compared against a dummy bcrypt hash as costly as
//     the costliest configured one, so timing does not tell them apart.
//
// The package does not depend on the registry: Service is a plain
// http.Handler that can run standalone. It must not import internal/...,
// distribution's handlers or storage packages (only the registry/auth
// interface and the storagedriver error types), and it never logs or
// echoes passwords, secrets, tokens or Authorization headers.
package token
