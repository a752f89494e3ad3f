package replication

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCatalog(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	for _, repo := range []string{"prod/a", "prod/b", "dev/c"} {
		up.seed(repo, "v1", randomImage(t))
	}
	r := newRemote(t, up, Options{})
	got, err := r.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"dev/c", "prod/a", "prod/b"}, got); diff != "" {
		t.Errorf("Catalog (-want +got):\n%s", diff)
	}
}

func TestCatalogPages(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	pages := map[string]string{
		"":   `{"repositories":["a/1","a/2"]}`,
		"a2": `{"repositories":["b/1"]}`,
	}
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/_catalog" {
			return false
		}
		last := r.URL.Query().Get("last")
		if last == "" {
			w.Header().Set("Link", `</v2/_catalog?n=2&last=a2>; rel="next"`)
		}
		fmt.Fprint(w, pages[last])
		return true
	})
	got, err := newRemote(t, up, Options{}).Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a/1", "a/2", "b/1"}, got); diff != "" {
		t.Errorf("Catalog over two pages (-want +got):\n%s", diff)
	}
}

func TestCatalogRefused(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"catalog not allowed"}]}`)
		return true
	})
	_, err := newRemote(t, up, Options{}).Catalog(t.Context())
	if !errors.Is(err, ErrUnauthorized) || Reason(err) != "DENIED: catalog not allowed" {
		t.Errorf("Catalog refused: %v (reason %q), want ErrUnauthorized with the remote's reason", err, Reason(err))
	}
}
