package app_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/app"
	"github.com/portcullis/portcullis/internal/testenv"
)

// TestTombstonedContentAnswersAsAbsent: content a collection is deleting
// (a tombstone in the backend) is unknown to a HEAD, refused in a manifest
// PUT and not mounted, so the client uploads it again; every such request
// first leaves a marker. (A registry that has not read the run state yet
// vouches as though a collection were running.)
func TestTombstonedContentAnswersAsAbsent(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	img, _ := random.Image(512, 1)
	if err := remote.Write(mustRef(t, reg.Host+"/team/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	gcDir := filepath.Join(reg.Config.DataDir, "portcullis", "gc")
	tomb := filepath.Join(gcDir, "tombstones", "b", "sha256", layer.Hex)
	if err := os.MkdirAll(filepath.Dir(tomb), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tomb, []byte("test"), 0o644); err != nil {
		t.Fatal(err)
	}

	do := func(method, path string, body []byte, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, reg.URL+path, bytes.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := do(http.MethodHead, "/v2/team/app/blobs/"+layer.String(), nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of a tombstoned blob: %s, want 404", resp.Status)
	}
	if _, err := os.Stat(filepath.Join(gcDir, "marks", "sha256", layer.Hex)); err != nil {
		t.Errorf("no marker for the blob a client asked about: %v", err)
	}
	if resp := do(http.MethodPut, "/v2/team/app/manifests/v2", raw, "Content-Type", string(mt)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("manifest PUT referring to a tombstoned blob: %s, want 400 MANIFEST_BLOB_UNKNOWN", resp.Status)
	}
	if resp := do(http.MethodPost, "/v2/other/app/blobs/uploads/?mount="+layer.String()+"&from=team/app", nil); resp.StatusCode != http.StatusAccepted {
		t.Errorf("mount of a tombstoned blob: %s, want 202 (an upload instead)", resp.Status)
	}
	if err := os.Remove(tomb); err != nil {
		t.Fatal(err)
	}
	if resp := do(http.MethodHead, "/v2/team/app/blobs/"+layer.String(), nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD once the tombstone is gone: %s", resp.Status)
	}
	if resp := do(http.MethodPut, "/v2/team/app/manifests/v2", raw, "Content-Type", string(mt)); resp.StatusCode != http.StatusCreated {
		t.Errorf("manifest PUT once the tombstone is gone: %s", resp.Status)
	}
}

// TestCollectBesideAServingRegistry runs app.Collect (what `registry gc`
// does) on the storage of a serving registry: the deleted image's blobs go,
// the tagged image pulls.
func TestCollectBesideAServingRegistry(t *testing.T) {
	t.Parallel()
	grace := config.Duration(0)
	reg := testenv.Start(t, func(c *config.Config) { c.GC.Grace = &grace })
	keep, _ := random.Image(512, 2)
	drop, _ := random.Image(512, 2)
	if err := remote.Write(mustRef(t, reg.Host+"/team/app:keep"), keep); err != nil {
		t.Fatal(err)
	}
	dropRef := mustRef(t, reg.Host+"/team/app:drop")
	if err := remote.Write(dropRef, drop); err != nil {
		t.Fatal(err)
	}
	dd, _ := drop.Digest()
	if err := remote.Delete(mustRef(t, reg.Host+"/team/app@"+dd.String())); err != nil {
		t.Fatal(err)
	}
	rep, err := app.Collect(context.Background(), reg.Config, slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	if rep.Blobs.Deleted != 4 { // the manifest, the config, two layers
		t.Errorf("blobs deleted: %d, want 4\n%+v", rep.Blobs.Deleted, rep.Deleted)
	}
	got, err := remote.Image(mustRef(t, reg.Host+"/team/app:keep"))
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := got.Layers()
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("a kept layer: %v", err)
		}
		rc.Close()
	}
	dl, _ := drop.Layers()
	d0, _ := dl[0].Digest()
	resp, err := http.Head(reg.URL + "/v2/team/app/blobs/" + d0.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a deleted image's layer: %s, want 404", resp.Status)
	}
}
