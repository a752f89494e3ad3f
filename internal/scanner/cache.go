package scanner

import (
	"context"
	"encoding/json"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/inventory"
)

var bucketLayers = []byte("scan/layers")

// layerCache keeps layer inventories in the metadata database, keyed by
// blob digest and DiffID (scan.LayerKey): a layer shared by many images is
// read once. It can be rebuilt by
// reading the layers again.
type layerCache struct{ db *bolt.DB }

func newLayerCache(db *bolt.DB) (*layerCache, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketLayers)
		return err
	})
	return &layerCache{db: db}, err
}

// GetLayer returns the cached inventory of a layer. A failure of the
// metadata database is a localError: the scan is retried.
func (c *layerCache) GetLayer(_ context.Context, key scan.LayerKey) (*inventory.Layer, bool, error) {
	var data []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		data = append(data, tx.Bucket(bucketLayers).Get([]byte(key.String()))...)
		return nil
	})
	if err != nil {
		return nil, false, &localError{err}
	}
	if data == nil {
		return nil, false, nil
	}
	var l inventory.Layer
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, false, nil // unreadable: index again
	}
	return &l, true, nil
}

// PutLayer caches the inventory of a layer. A failure of the metadata
// database (a full disk) is a localError: the scan is retried.
func (c *layerCache) PutLayer(_ context.Context, key scan.LayerKey, l *inventory.Layer) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLayers).Put([]byte(key.String()), data)
	})
	if err != nil {
		return &localError{err}
	}
	return nil
}
