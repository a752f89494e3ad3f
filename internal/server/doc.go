// Package server holds the HTTP glue in front of every route: request ids,
// panic recovery, access logging and request metrics. It knows nothing of
// registries; it wraps http.Handlers.
package server
