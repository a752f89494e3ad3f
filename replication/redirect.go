package replication

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// maxRedirects is how many redirects one request follows (as net/http).
const maxRedirects = 10

// errRedirect is wrapped in the error of a call whose answer redirected
// where the registry does not follow.
var errRedirect = errors.New("redirect refused")

// checkRedirect decides whether a redirect the remote answered with is
// followed. Remotes redirect blobs to storage or a CDN, so another host is
// fine; but a blob is streamed to clients before its digest can be
// checked, so a redirect must not turn the registry into a client of its
// own machine or of the cloud metadata service on the remote's behalf: it
// may not go to a loopback address (unless the remote itself is on one),
// to a link-local or unspecified address, nor from https to http.
func (r *Remote) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", errRedirect, maxRedirects)
	}
	if err := r.checkTarget(via[len(via)-1].URL.Scheme, req.URL); err != nil {
		return fmt.Errorf("%w: %w", errRedirect, err)
	}
	return nil
}

// checkTarget decides whether the registry sends a request to u, a URL
// the remote named (a redirect's Location, a token realm) after a request
// of scheme from: not to a loopback address unless the remote itself is on
// one, never to a link-local, unspecified or multicast address, and not
// from https to http.
func (r *Remote) checkTarget(from string, u *url.URL) error {
	if from == "https" && u.Scheme != "https" {
		return fmt.Errorf("from https to %s", clean(u.Scheme))
	}
	base, _ := url.Parse(r.base)
	switch hostKind(u.Hostname()) {
	case hostLoopback:
		if base == nil || hostKind(base.Hostname()) != hostLoopback {
			return fmt.Errorf("to loopback address %s", clean(u.Host))
		}
	case hostForbidden:
		return fmt.Errorf("to %s", clean(u.Host))
	}
	return nil
}

type addressKind int

const (
	hostOther addressKind = iota
	hostLoopback
	hostForbidden // link-local (the cloud metadata service), unspecified, multicast
)

// hostKind classifies a URL's host name: an IP literal by its address,
// localhost and its subdomains as loopback. Other names are not resolved.
func hostKind(host string) addressKind {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return hostLoopback
	}
	ip := net.ParseIP(h)
	switch {
	case ip == nil:
		return hostOther
	case ip.IsLoopback():
		return hostLoopback
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast(), ip.IsMulticast(), ip.IsUnspecified():
		return hostForbidden
	}
	return hostOther
}
