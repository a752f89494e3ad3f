package scanner

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/inventory"
)

// metaStore is what the node keeps of scans in its metadata database: the
// scanned images with their inventories and reports (to re-match them),
// the "scan failed" verdicts, the manifests that are no images, and the
// database the remembered reports were matched with. All of it is a cache
// of storage, rebuilt by the reconcile pass when the file is lost.
type metaStore struct {
	db *bolt.DB
	// vuln counts the remembered images by severity; nil counts nothing.
	vuln *vulnerable
}

// scannedImage is a remembered image of a repository.
type scannedImage struct {
	repo string
	e    scanned
}

// scannedImages returns the remembered images that have an inventory. An
// inventory of an older format is returned too: it is re-matched until the
// reconcile pass has indexed the image again (remembered).
func (m *metaStore) scannedImages() ([]scannedImage, error) {
	var items []scannedImage
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketScanned)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if string(k) == string(keyMatchedDB) {
				return nil
			}
			var e scanned
			if json.Unmarshal(v, &e) != nil || e.Inventory == nil {
				return nil
			}
			repo, _, _ := strings.Cut(string(k), "@")
			items = append(items, scannedImage{repo: repo, e: e})
			return nil
		})
	})
	return items, err
}

var bucketScanned = []byte("scan/images")

// scanned is what the node remembers of a scanned image so that a new
// database re-matches it without reading its layers again. It can be
// rebuilt from storage: the image's inventory and report are its referrers.
type scanned struct {
	Subject   v1.Descriptor         `json:"subject"`
	Inventory *scan.StoredInventory `json:"inventory"`
	Report    *scan.Report          `json:"report"`
	// Created is the created time of the stored report.
	Created time.Time `json:"created,omitzero"`
}

func scannedKey(repo string, d digest.Digest) []byte { return []byte(repo + "@" + d.String()) }

// remember records a scanned image (forgetting an earlier failure to scan
// it), and its referrers as manifests that
// are not images (so the reconcile pass does not read them).
func (m *metaStore) remember(repo string, e scanned, referrers ...digest.Digest) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketScanned)
		if err != nil {
			return err
		}
		if err := b.Put(scannedKey(repo, e.Subject.Digest), data); err != nil {
			return err
		}
		// A report supersedes an earlier "scan failed".
		if fb := tx.Bucket(bucketFailed); fb != nil {
			if err := fb.Delete(scannedKey(repo, e.Subject.Digest)); err != nil {
				return err
			}
		}
		return putKinds(tx, repo, kindOther, referrers...)
	})
	if err == nil {
		m.vuln.set(string(scannedKey(repo, e.Subject.Digest)), e.Report)
	}
	return err
}

var bucketKinds = []byte("scan/kinds")

// putKinds records, in tx, manifests of repo that are not images (k is
// kindIndex or kindOther): a digest's content never changes, so the
// reconcile pass never needs to read them again.
func putKinds(tx *bolt.Tx, repo string, k manifestKind, ds ...digest.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketKinds)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if err := b.Put(scannedKey(repo, d), []byte{byte(k)}); err != nil {
			return err
		}
	}
	return nil
}

func (m *metaStore) noteKind(repo string, d digest.Digest, k manifestKind) error {
	return m.db.Update(func(tx *bolt.Tx) error { return putKinds(tx, repo, k, d) })
}

// knownNotImage reports whether repo@d was recorded as an index or an
// artifact.
func (m *metaStore) knownNotImage(repo string, d digest.Digest) bool {
	found := false
	_ = m.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketKinds); b != nil {
			found = b.Get(scannedKey(repo, d)) != nil
		}
		return nil
	})
	return found
}

var keyMatchedDB = []byte("scan/matched-db")

// matchedDB returns the database the remembered reports were matched with.
func (m *metaStore) matchedDB() digest.Digest {
	var d digest.Digest
	_ = m.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketScanned); b != nil {
			d = digest.Digest(b.Get(keyMatchedDB))
		}
		return nil
	})
	return d
}

func (m *metaStore) setMatchedDB(d digest.Digest) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketScanned)
		if err != nil {
			return err
		}
		return b.Put(keyMatchedDB, []byte(d))
	})
}

var bucketFailed = []byte("scan/failed")

// cacheFailure remembers that repo@d could not be scanned, and why, and
// its failure artifact as a manifest that is no image.
func (m *metaStore) cacheFailure(repo string, d digest.Digest, reason string, referrer digest.Digest) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketFailed)
		if err != nil {
			return err
		}
		if err := b.Put(scannedKey(repo, d), []byte(reason)); err != nil {
			return err
		}
		return putKinds(tx, repo, kindOther, referrer)
	})
}

// remembered reports whether repo@d was scanned by this node (and so is
// re-matched whenever the database changes).
func (m *metaStore) remembered(repo string, d digest.Digest) bool {
	found := false
	_ = m.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketScanned); b != nil {
			found = currentInventory(b.Get(scannedKey(repo, d)))
		}
		return nil
	})
	return found
}

// currentInventory reports whether v, a remembered scanned entry, holds an
// inventory of the current formats. One made by older extractors (a new
// ecosystem mapping, a new package database reader) is as good as none:
// the image is indexed again, and keeps its last report until then. It
// reads only up to the inventory's two leading fields (StoredInventory's
// Format and InventoryFormat), not the whole entry: the reconcile pass asks
// for every manifest.
func currentInventory(v []byte) bool {
	if v == nil {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return false
		}
		if k != "inventory" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return false
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('{') {
			return false // null, or not an object
		}
		format, inventoryFormat := -1, -1
		for dec.More() && (format < 0 || inventoryFormat < 0) {
			k, err := dec.Token()
			if err != nil {
				return false
			}
			switch k {
			case "format":
				err = dec.Decode(&format)
			case "inventoryFormat":
				err = dec.Decode(&inventoryFormat)
			default:
				var skip json.RawMessage
				err = dec.Decode(&skip)
			}
			if err != nil {
				return false
			}
		}
		return format == scan.StoredInventoryFormat && inventoryFormat == inventory.FormatVersion
	}
	return false
}

// forget drops what the node remembers of a deleted manifest repo@d.
func (m *metaStore) forget(repo string, d digest.Digest) error {
	m.vuln.drop(string(scannedKey(repo, d)))
	return m.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketScanned, bucketFailed, bucketKinds} {
			if b := tx.Bucket(name); b != nil {
				if err := b.Delete(scannedKey(repo, d)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// failure returns why repo@d could not be scanned as the metadata
// database caches it, or "".
func (m *metaStore) failure(repo string, d digest.Digest) string {
	var reason string
	_ = m.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketFailed); b != nil {
			reason = string(b.Get(scannedKey(repo, d)))
		}
		return nil
	})
	return reason
}

// report returns the report of repo@d this node remembers, nil when it
// remembers none. It decodes the report alone, not the inventory.
func (m *metaStore) report(repo string, d digest.Digest) *scan.Report {
	var e struct {
		Report *scan.Report `json:"report"`
	}
	_ = m.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketScanned); b != nil {
			if v := b.Get(scannedKey(repo, d)); v != nil {
				_ = json.Unmarshal(v, &e)
			}
		}
		return nil
	})
	return e.Report
}
