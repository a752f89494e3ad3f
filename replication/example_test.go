package replication_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/replication"
)

// A pull through a remote: the manifest, then a blob whose digest the
// caller verifies while it streams.
func Example() {
	ctx := context.Background()
	hub, err := replication.New(replication.Options{
		Name:         "dockerhub",
		URL:          "https://registry-1.docker.io",
		UsernameFile: "/etc/portcullis/dockerhub/username",
		PasswordFile: "/etc/portcullis/dockerhub/password",
		OpenFor:      time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	desc, manifest, err := hub.GetManifest(ctx, "library/alpine", "3.20")
	switch {
	case errors.Is(err, replication.ErrNotFound):
		log.Fatal("no such image")
	case errors.Is(err, replication.ErrUnavailable):
		log.Fatalf("try later: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(desc.MediaType, desc.Digest, len(manifest))

	layer := digest.Digest("sha256:...") // from the manifest
	body, size, err := hub.GetBlob(ctx, "library/alpine", layer)
	if err != nil {
		log.Fatal(err)
	}
	defer body.Close()
	v := layer.Verifier()
	if _, err := io.Copy(v, body); err != nil || !v.Verified() {
		log.Fatalf("blob of %d bytes: not verified: %v", size, err)
	}
}
