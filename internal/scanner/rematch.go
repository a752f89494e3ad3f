package scanner

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

var bucketScanned = []byte("scan/images")

// scanned is what the node remembers of a scanned image so that a new
// database re-matches it without reading its layers again. It can be
// rebuilt by scanning the images again.
type scanned struct {
	Subject   v1.Descriptor         `json:"subject"`
	Inventory *scan.StoredInventory `json:"inventory"`
	Report    *scan.Report          `json:"report"`
}

func scannedKey(repo string, d digest.Digest) []byte { return []byte(repo + "@" + d.String()) }

func (s *Service) remember(repo string, e scanned) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return s.meta.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketScanned)
		if err != nil {
			return err
		}
		return b.Put(scannedKey(repo, e.Subject.Digest), data)
	})
}

// rematchAll re-matches every remembered image against the current
// database and stores a new report for those whose findings or verdict
// changed. Layers are not read.
func (s *Service) rematchAll(ctx context.Context) error {
	db := s.database()
	matcher := scan.NewMatcher(db)
	type item struct {
		repo string
		e    scanned
	}
	var items []item
	err := s.meta.View(func(tx *bolt.Tx) error {
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
			items = append(items, item{repo: repo, e: e})
			return nil
		})
	})
	if err != nil {
		return err
	}
	changed := 0
	for _, it := range items {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		report, change := matcher.Rematch(it.e.Inventory, it.e.Report, s.policy)
		if !change.Changed() {
			continue
		}
		r, err := s.open(ctx, it.repo)
		if err != nil {
			return err
		}
		a, err := artifact.ReportArtifact(it.e.Subject, report, time.Now())
		if err != nil {
			return err
		}
		if err := push(ctx, r, a, ""); err != nil {
			return fmt.Errorf("store report of %s@%s: %w", it.repo, it.e.Subject.Digest, err)
		}
		it.e.Report = report
		if err := s.remember(it.repo, it.e); err != nil {
			return err
		}
		s.rematches.Inc()
		changed++
	}
	s.log.InfoContext(ctx, "re-matched scanned images", "images", len(items), "changed", changed)
	return nil
}

var keyMatchedDB = []byte("scan/matched-db")

// matchedDB returns the database the remembered reports were matched with.
func (s *Service) matchedDB() digest.Digest {
	var d digest.Digest
	_ = s.meta.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketScanned); b != nil {
			d = digest.Digest(b.Get(keyMatchedDB))
		}
		return nil
	})
	return d
}

func (s *Service) setMatchedDB(d digest.Digest) error {
	return s.meta.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketScanned)
		if err != nil {
			return err
		}
		return b.Put(keyMatchedDB, []byte(d))
	})
}

var bucketFailed = []byte("scan/failed")

// recordFailure remembers that repo@d could not be scanned, and why.
func (s *Service) recordFailure(repo string, d digest.Digest, cause error) error {
	reason := cause.Error()
	if !strings.HasPrefix(reason, "scan failed") {
		reason = "scan failed: " + reason
	}
	return s.meta.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketFailed)
		if err != nil {
			return err
		}
		return b.Put(scannedKey(repo, d), []byte(reason))
	})
}

// remembered reports whether repo@d was scanned by this node (and so is
// re-matched whenever the database changes).
func (s *Service) remembered(repo string, d digest.Digest) bool {
	found := false
	_ = s.meta.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketScanned); b != nil {
			found = b.Get(scannedKey(repo, d)) != nil
		}
		return nil
	})
	return found
}

// forget drops what the node remembers of a deleted manifest repo@d.
func (s *Service) forget(repo string, d digest.Digest) error {
	return s.meta.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketScanned, bucketFailed} {
			if b := tx.Bucket(name); b != nil {
				if err := b.Delete(scannedKey(repo, d)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// failure returns why repo@d could not be scanned, or "".
func (s *Service) failure(repo string, d digest.Digest) string {
	var reason string
	_ = s.meta.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketFailed); b != nil {
			reason = string(b.Get(scannedKey(repo, d)))
		}
		return nil
	})
	return reason
}
