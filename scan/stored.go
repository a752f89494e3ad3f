package scan

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// StoredInventoryFormat is the version of the StoredInventory encoding.
const StoredInventoryFormat = 1

// Errors returned by DecodeInventory.
var (
	// ErrStaleInventory is returned when the stored inventory was written in another
	// StoredInventoryFormat or by extractors of another inventory.FormatVersion: the image
	// must be indexed again.
	ErrStaleInventory = errors.New("stored inventory is of another format")
	// ErrMalformedInventory is returned when the data is not a StoredInventory.
	ErrMalformedInventory = errors.New("malformed stored inventory")
)

// StoredInventory is an image's package inventory as it is kept between scans, so that a
// new vulnerability database re-matches it (Rematch) without reading the layers again.
type StoredInventory struct {
	// Format is StoredInventoryFormat.
	Format int `json:"format"`
	// InventoryFormat is the inventory.FormatVersion of the extractors that produced it.
	InventoryFormat int `json:"inventoryFormat"`
	// Image identifies the image; OS and Ecosystem are left empty (they follow from
	// Inventory).
	Image     ImageInfo        `json:"image"`
	Inventory *inventory.Image `json:"inventory"`
}

// NewStoredInventory wraps an inventory for storage, in the current formats.
func NewStoredInventory(image ImageInfo, inv *inventory.Image) *StoredInventory {
	image.OS, image.Ecosystem = "", ""
	if image.Layers == nil {
		image.Layers = []string{}
	}
	return &StoredInventory{
		Format:          StoredInventoryFormat,
		InventoryFormat: inventory.FormatVersion,
		Image:           image,
		Inventory:       inv,
	}
}

// Encode returns the JSON encoding of s.
func (s *StoredInventory) Encode() ([]byte, error) { return json.Marshal(s) }

// DecodeInventory reads a StoredInventory written by Encode. It returns ErrMalformedInventory
// for data that is not one, and ErrStaleInventory for one of another format.
func DecodeInventory(data []byte) (*StoredInventory, error) {
	var s StoredInventory
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedInventory, err)
	}
	if s.Format != StoredInventoryFormat || s.InventoryFormat != inventory.FormatVersion {
		return nil, fmt.Errorf("%w: format %d, inventory format %d (want %d, %d)",
			ErrStaleInventory, s.Format, s.InventoryFormat, StoredInventoryFormat, inventory.FormatVersion)
	}
	if s.Inventory == nil {
		return nil, fmt.Errorf("%w: no inventory", ErrMalformedInventory)
	}
	if s.Inventory.Packages == nil {
		s.Inventory.Packages = []inventory.Package{}
	}
	if s.Image.Layers == nil {
		s.Image.Layers = []string{}
	}
	return &s, nil
}

// Report matches the stored inventory against db and applies the policy, giving the same
// report Scan gives for the image.
func (s *StoredInventory) Report(db *vulndb.DB, policy Policy) *Report {
	return s.report(db, policy, Match(s.Inventory, db))
}

func (s *StoredInventory) report(db *vulndb.DB, policy Policy, findings []Finding) *Report {
	r := newReport(s.Inventory, db, policy, findings)
	os, eco := r.Image.OS, r.Image.Ecosystem
	r.Image = s.Image
	r.Image.Layers = append([]string{}, s.Image.Layers...)
	r.Image.OS, r.Image.Ecosystem = os, eco
	return r
}
