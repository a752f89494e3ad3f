// Package metadb is the node-local metadata database, a bbolt file in the
// data directory. It holds only state that this node can rebuild or that is
// this node's alone; deleting the file never loses an image.
package metadb

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var bucketMeta = []byte("meta")

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("metadata database is in use by another process")

// DB is the metadata database.
type DB struct {
	bolt *bolt.DB
}

// Open opens (creating if needed) the database at path. It returns ErrLocked
// when another registry process uses the same data directory.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketMeta)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &DB{bolt: db}, nil
}

// Close closes the database.
func (d *DB) Close() error { return d.bolt.Close() }

// Bolt returns the underlying bbolt handle for components that keep their
// own buckets.
func (d *DB) Bolt() *bolt.DB { return d.bolt }

// Secret returns the node's random secret named name, creating it (n random
// bytes) on first use, so that it survives restarts.
func (d *DB) Secret(name string, n int) ([]byte, error) {
	var out []byte
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		key := []byte("secret/" + name)
		if v := b.Get(key); v != nil {
			out = append([]byte(nil), v...)
			return nil
		}
		out = make([]byte, n)
		if _, err := rand.Read(out); err != nil {
			return err
		}
		return b.Put(key, out)
	})
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return out, nil
}
