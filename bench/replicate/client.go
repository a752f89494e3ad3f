package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis/portcullis/bench/internal/benchimage"
)

// smallImage is an image of three 4 KiB random layers.
func smallImage() (v1.Image, error) {
	return benchimage.New(benchimage.RandomLayer(4<<10), benchimage.RandomLayer(4<<10), benchimage.RandomLayer(4<<10))
}

// siteA pushes to site A, which has no auth.
type siteA struct {
	addr   string
	tr     *http.Transport
	client *http.Client
	pusher *remote.Pusher
}

func newSiteA(addr string) (*siteA, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	p, err := remote.NewPusher(remote.WithTransport(tr),
		// A failure should fail the run, not hide in a slower time.
		remote.WithRetryPredicate(func(error) bool { return false }))
	if err != nil {
		return nil, err
	}
	return &siteA{addr: addr, tr: tr, client: &http.Client{Transport: tr, Timeout: time.Minute}, pusher: p}, nil
}

// close drops A's idle connections; a nil client is fine.
func (a *siteA) close() error {
	if a != nil {
		a.tr.CloseIdleConnections()
	}
	return nil
}

// push pushes img to repo at A, by tag or, when ref is a digest, by digest.
func (a *siteA) push(ctx context.Context, repo, ref string, img v1.Image) error {
	r, err := name.ParseReference(a.addr+"/"+repo+sep(ref)+ref, name.Insecure)
	if err != nil {
		return err
	}
	if err := a.pusher.Push(ctx, r, img); err != nil {
		return fmt.Errorf("push %s: %w", r, err)
	}
	return nil
}

// sep is ":" before a tag and "@" before a digest.
func sep(ref string) string {
	if _, err := v1.NewHash(ref); err == nil {
		return "@"
	}
	return ":"
}

// putManifest PUTs a manifest's bytes to repo:ref at A.
func (a *siteA) putManifest(ctx context.Context, repo, ref string, mediaType types.MediaType, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+a.addr+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", string(mediaType))
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("PUT %s:%s: %s: %s", repo, ref, resp.Status, b)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// tag PUTs img's manifest to repo:tag at A.
func (a *siteA) tag(ctx context.Context, repo, tag string, img v1.Image) error {
	body, err := img.RawManifest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	return a.putManifest(ctx, repo, tag, mt, body)
}

// pending reads the events A's push rule has pending from its status API.
func (a *siteA) pending(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+"/api/v1/replication", nil)
	if err != nil {
		return 0, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Rules []struct {
			Name    string `json:"name"`
			Pending int    `json:"pending"`
		} `json:"rules"`
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("replication status: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, fmt.Errorf("replication status: %w", err)
	}
	for _, r := range v.Rules {
		if r.Name == ruleName {
			return r.Pending, nil
		}
	}
	return 0, fmt.Errorf("replication status: no rule %s", ruleName)
}

// siteB reads site B as the account, with a bearer token per repository,
// fetched once and cached as clients do.
type siteB struct {
	addr string
	auth authn.Authenticator
	tr   *http.Transport
	mu   sync.Mutex
	repo map[string]*http.Client
}

func newSiteB(addr, password string) *siteB {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	return &siteB{addr: addr, auth: &authn.Basic{Username: account, Password: password}, tr: tr, repo: map[string]*http.Client{}}
}

// close drops B's idle connections.
func (b *siteB) close() error {
	b.tr.CloseIdleConnections()
	return nil
}

func (b *siteB) client(ctx context.Context, repo string) (*http.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.repo[repo]; c != nil {
		return c, nil
	}
	r, err := name.NewRepository(b.addr+"/"+repo, name.Insecure)
	if err != nil {
		return nil, err
	}
	rt, err := transport.NewWithContext(ctx, r.Registry, b.auth, b.tr, []string{r.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("token for %s at B: %w", repo, err)
	}
	c := &http.Client{Transport: rt, Timeout: time.Minute}
	b.repo[repo] = c
	return c, nil
}

// head returns the digest B has for repo:tag, "" when it has none.
func (b *siteB) head(ctx context.Context, repo, tag string) (string, error) {
	c, err := b.client(ctx, repo)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+b.addr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", string(types.OCIManifestSchema1)+", "+string(types.OCIImageIndex))
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Header.Get("Docker-Content-Digest"), nil
	case http.StatusNotFound:
		return "", nil
	}
	return "", fmt.Errorf("HEAD %s:%s at B: %s", repo, tag, resp.Status)
}

// tags lists the tags of repo at B, following pagination; none when the
// repository does not exist.
func (b *siteB) tags(ctx context.Context, repo string) ([]string, error) {
	c, err := b.client(ctx, repo)
	if err != nil {
		return nil, err
	}
	var out []string
	next := "http://" + b.addr + "/v2/" + repo + "/tags/list?n=1000"
	for next != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			return nil, nil
		}
		var v struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return nil, errors.Join(fmt.Errorf("tags of %s at B: %s", repo, resp.Status), err)
		}
		out = append(out, v.Tags...)
		next = ""
		if l := resp.Header.Get("Link"); l != "" {
			if u, err := linkNext(resp.Request.URL, l); err == nil {
				next = u
			}
		}
	}
	return out, nil
}

// linkNext resolves the target of a Link header `<url>; rel="next"`.
func linkNext(base *url.URL, h string) (string, error) {
	start, end := bytes.IndexByte([]byte(h), '<'), bytes.IndexByte([]byte(h), '>')
	if start < 0 || end < start {
		return "", fmt.Errorf("malformed Link header %q", h)
	}
	u, err := url.Parse(h[start+1 : end])
	if err != nil {
		return "", err
	}
	return base.ResolveReference(u).String(), nil
}

// waitTag polls B every interval until it answers repo:tag with digest,
// and returns when it first did.
func (b *siteB) waitTag(ctx context.Context, repo, tag, digest string, interval time.Duration) (time.Time, error) {
	for {
		got, err := b.head(ctx, repo, tag)
		now := time.Now()
		if err != nil {
			return now, err
		}
		if got == digest {
			return now, nil
		}
		if got != "" {
			return now, fmt.Errorf("B has %s:%s at %s, pushed %s", repo, tag, got, digest)
		}
		select {
		case <-ctx.Done():
			return now, fmt.Errorf("waiting for %s:%s at B: %w", repo, tag, ctx.Err())
		case <-time.After(interval):
		}
	}
}
