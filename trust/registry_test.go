package trust_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/trust"
)

// httpContent is trust.Content over a registry's HTTP API (plain HTTP).
type httpContent struct {
	base string // http://host:port
	// calls counts requests, to see the cache at work.
	calls atomic.Int64
}

var _ trust.Content = (*httpContent)(nil)

func (c *httpContent) get(ctx context.Context, method, path string, accept ...string) (*http.Response, error) {
	c.calls.Add(1)
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %w", method, path, trust.ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, body)
	}
	return resp, nil
}

var manifestTypes = []string{
	v1.MediaTypeImageManifest, v1.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}

func (c *httpContent) Manifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error) {
	resp, err := c.get(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+d.String(), manifestTypes...)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.Header.Get("Content-Type"), data, err
}

func (c *httpContent) Blob(ctx context.Context, repo string, d digest.Digest, max int64) ([]byte, error) {
	resp, err := c.get(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("blob %s: %w", d, trust.ErrTooLarge)
	}
	return data, nil
}

func (c *httpContent) Referrers(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error) {
	resp, err := c.get(ctx, http.MethodGet, "/v2/"+repo+"/referrers/"+subject.String(), v1.MediaTypeImageIndex)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var idx v1.Index
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		return nil, err
	}
	return idx.Manifests, nil
}

func (c *httpContent) ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	resp, err := c.get(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+tag, manifestTypes...)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return digest.Parse(resp.Header.Get("Docker-Content-Digest"))
}

// pushBlob uploads data to repo and returns its descriptor.
func pushBlob(t testing.TB, base, repo, mediaType string, data []byte) v1.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+d.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %s", resp.Status)
	}
	return v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// pushManifest puts a manifest under ref (a tag or its digest) and returns
// its digest.
func pushManifest(t testing.TB, base, repo, ref, mediaType string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	if ref == "" {
		ref = d.String()
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(data))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest %s:%s: %s: %s", repo, ref, resp.Status, body)
	}
	return d
}

// getManifest reads a manifest from the registry.
func getManifest(t testing.TB, c *httpContent, repo string, d digest.Digest) (string, []byte) {
	t.Helper()
	mt, data, err := c.Manifest(context.Background(), repo, d)
	if err != nil {
		t.Fatal(err)
	}
	return mt, data
}

// getBlob reads a blob from the registry.
func getBlob(t testing.TB, c *httpContent, repo string, d digest.Digest) []byte {
	t.Helper()
	data, err := c.Blob(context.Background(), repo, d, 1<<24)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// copyManifest copies manifest d with its config and layers from one
// repository to another (ref: tag or "" for by digest); the bytes, hence
// the digest, stay the same.
func copyManifest(t testing.TB, c *httpContent, from, to string, d digest.Digest, ref string) {
	t.Helper()
	mt, data := getManifest(t, c, from, d)
	var m v1.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		pushBlob(t, c.base, to, b.MediaType, getBlob(t, c, from, b.Digest))
	}
	pushManifest(t, c.base, to, ref, mt, data)
}

// referrersOf lists the referrers of d with the given artifact type.
func referrersOf(t testing.TB, c *httpContent, repo string, d digest.Digest, artifactType string) []v1.Descriptor {
	t.Helper()
	all, err := c.Referrers(context.Background(), repo, d)
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Descriptor
	for _, r := range all {
		if strings.HasPrefix(r.ArtifactType, artifactType) {
			out = append(out, r)
		}
	}
	return out
}

// rewriteArtifact pushes a copy of the signature manifest sig (from repo)
// into repo with its subject set to subject and its single layer replaced by
// edit(layer bytes); it returns the new manifest's digest.
func rewriteArtifact(t testing.TB, c *httpContent, repo string, sig digest.Digest, subject *v1.Descriptor, edit func([]byte) []byte) digest.Digest {
	t.Helper()
	mt, data := getManifest(t, c, repo, sig)
	var m v1.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if subject != nil {
		m.Subject = subject
	}
	if edit != nil {
		layer := m.Layers[0]
		nb := edit(getBlob(t, c, repo, layer.Digest))
		nd := pushBlob(t, c.base, repo, layer.MediaType, nb)
		nd.Annotations = layer.Annotations
		m.Layers[0] = nd
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return pushManifest(t, c.base, repo, "", mt, out)
}
