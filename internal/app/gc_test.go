package app_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/app"
	"github.com/portcullis/portcullis/internal/testenv"
)

// TestTombstonedContentWaitsForTheSweeper: a request about content a
// collection is deleting (a tombstone in the backend) first leaves a
// marker, then waits for the sweeper's decision and answers with what is
// there: the content when it was spared, absent when it was deleted (a
// manifest PUT then gets MANIFEST_BLOB_UNKNOWN, a mount becomes an
// upload). A registry that has not read the run state yet vouches as
// though a collection were running.
func TestTombstonedContentWaitsForTheSweeper(t *testing.T) {
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
	blobDir := filepath.Join(reg.Config.DataDir, "docker", "registry", "v2", "blobs", "sha256", layer.Hex[:2], layer.Hex)
	tombstone := func() {
		if err := os.MkdirAll(filepath.Dir(tomb), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tomb, []byte("test"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// send starts a request and returns its status once answered.
	send := func(method, path string, body []byte, header ...string) <-chan int {
		req, _ := http.NewRequest(method, reg.URL+path, bytes.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		out := make(chan int, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out <- 0
				return
			}
			resp.Body.Close()
			out <- resp.StatusCode
		}()
		return out
	}
	pending := func(what string, c <-chan int) {
		t.Helper()
		select {
		case code := <-c:
			t.Fatalf("%s answered %d while the blob was tombstoned", what, code)
		case <-time.After(700 * time.Millisecond):
		}
	}
	answer := func(what string, c <-chan int, want int) {
		t.Helper()
		select {
		case code := <-c:
			if code != want {
				t.Errorf("%s: %d, want %d", what, code, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer once the tombstone went", what)
		}
	}

	// Spared: the tombstone goes, the blob stays.
	tombstone()
	head := send(http.MethodHead, "/v2/team/app/blobs/"+layer.String(), nil)
	pending("HEAD", head)
	if _, err := os.Stat(filepath.Join(gcDir, "marks", "sha256", layer.Hex)); err != nil {
		t.Errorf("no marker for the blob a client asked about: %v", err)
	}
	if err := os.Remove(tomb); err != nil {
		t.Fatal(err)
	}
	answer("HEAD of a spared blob", head, http.StatusOK)

	// Deleted: the blob goes, then its tombstone.
	tombstone()
	put := send(http.MethodPut, "/v2/team/app/manifests/v2", raw, "Content-Type", string(mt))
	mount := send(http.MethodPost, "/v2/other/app/blobs/uploads/?mount="+layer.String()+"&from=team/app", nil)
	head = send(http.MethodHead, "/v2/team/app/blobs/"+layer.String(), nil)
	pending("manifest PUT", put)
	if err := os.RemoveAll(blobDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tomb); err != nil {
		t.Fatal(err)
	}
	answer("manifest PUT referring to a deleted blob", put, http.StatusBadRequest)
	answer("mount of a deleted blob", mount, http.StatusAccepted)
	answer("HEAD of a deleted blob", head, http.StatusNotFound)
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
