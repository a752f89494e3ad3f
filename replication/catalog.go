package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// maxCatalogPages bounds the pages of the catalog read (1,000 repositories
// a page asked for).
const maxCatalogPages = 1000

// Catalog lists the remote's repositories: GET /v2/_catalog, following Link
// pagination on the remote's origin for at most 1,000 pages (a longer list
// is cut, and the cut logged). A registry lists only what the credentials
// may see. Errors wrap ErrUnauthorized (the remote refuses its catalog to
// these credentials: ErrDenied when it says DENIED), ErrUnavailable or
// ErrTooLarge, or are a *StatusError (404: the remote has no catalog).
func (r *Remote) Catalog(ctx context.Context) ([]string, error) {
	out := []string{}
	err := r.eachPage(ctx, call{op: "catalog", what: "list repositories", method: http.MethodGet,
		url: r.base + "/v2/_catalog?n=1000", scope: "registry:catalog:*"}, maxCatalogPages, nil,
		func(body []byte) error {
			var v struct {
				Repositories []string `json:"repositories"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			out = append(out, v.Repositories...)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}
