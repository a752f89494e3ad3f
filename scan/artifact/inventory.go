package artifact

import (
	"context"
	"fmt"
	"strconv"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan"
)

// InventoryArtifact packs an image's stored inventory as a referrer of subject: the empty
// config and one MediaTypeInventory layer holding scan.StoredInventory's encoding. It
// returns ErrInvalidArtifact for an invalid subject.
func InventoryArtifact(subject ocispec.Descriptor, inv *scan.StoredInventory, createdAt time.Time) (*Artifact, error) {
	doc, err := inv.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	annotations := map[string]string{
		ocispec.AnnotationCreated: created(createdAt),
		AnnotationPackages:        strconv.Itoa(len(inv.Inventory.Packages)),
	}
	return referrer(ArtifactTypeInventory, MediaTypeInventory, subject, doc, annotations)
}

// ReadInventory reads an inventory artifact. Besides the errors of ReadReport it returns
// scan.ErrStaleInventory for an inventory of another format, which the caller re-indexes,
// and scan.ErrMalformedInventory.
func ReadInventory(ctx context.Context, fetch Fetch, manifest []byte) (*scan.StoredInventory, *ocispec.Manifest, error) {
	m, doc, err := readDocument(ctx, fetch, manifest, ArtifactTypeInventory, MediaTypeInventory)
	if err != nil {
		return nil, nil, err
	}
	inv, err := scan.DecodeInventory(doc)
	if err != nil {
		return nil, nil, err
	}
	return inv, m, nil
}
