package scanner

import (
	"context"
	"encoding/json"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/scan/inventory"
)

var bucketLayers = []byte("scan/layers")

// layerCache keeps layer inventories in the metadata database, keyed by
// DiffID: a layer shared by many images is read once. It can be rebuilt by
// reading the layers again.
type layerCache struct{ db *bolt.DB }

func newLayerCache(db *bolt.DB) (*layerCache, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketLayers)
		return err
	})
	return &layerCache{db: db}, err
}

func (c *layerCache) GetLayer(_ context.Context, diffID v1.Hash) (*inventory.Layer, bool, error) {
	var data []byte
	_ = c.db.View(func(tx *bolt.Tx) error {
		data = append(data, tx.Bucket(bucketLayers).Get([]byte(diffID.String()))...)
		return nil
	})
	if data == nil {
		return nil, false, nil
	}
	var l inventory.Layer
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, false, nil // unreadable: index again
	}
	return &l, true, nil
}

func (c *layerCache) PutLayer(_ context.Context, diffID v1.Hash, l *inventory.Layer) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLayers).Put([]byte(diffID.String()), data)
	})
}
