package scanner

import (
	"encoding/json"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
)

// vulnerable counts the images this node remembers by the worst severity
// of their findings: "vulnerable images now", which the running count of
// findings cannot say. It is read from the metadata database once, at the
// first scrape, then kept up to date as reports are remembered and images
// forgotten, so a scrape costs a map walk, never a storage walk. A nil
// *vulnerable counts nothing.
type vulnerable struct {
	db *bolt.DB

	mu     sync.Mutex
	loaded bool
	worst  map[string]osv.Level // repo@digest → worst severity; absent: no findings
}

// severities are the label values of portcullis_scan_vulnerable_images.
var severities = []osv.Level{osv.Critical, osv.High, osv.Medium, osv.Low, osv.Unknown}

func worstOf(r *scan.Report) (osv.Level, bool) {
	if r == nil || len(r.Findings) == 0 {
		return "", false
	}
	worst := osv.Level("")
	for _, f := range r.Findings {
		if l := f.Severity.Level; l.Rank() > worst.Rank() {
			worst = l
		}
	}
	if worst.Rank() < 0 {
		worst = osv.Unknown
	}
	return worst, true
}

// set records the report remembered for key.
func (v *vulnerable) set(key string, r *scan.Report) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.loaded {
		return // the first count reads it from the database
	}
	if l, ok := worstOf(r); ok {
		v.worst[key] = l
	} else {
		delete(v.worst, key)
	}
}

// drop forgets key.
func (v *vulnerable) drop(key string) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.worst, key)
}

// counts returns the number of images by their worst severity, reading
// the metadata database the first time.
func (v *vulnerable) counts() (map[osv.Level]int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.loaded {
		worst := map[string]osv.Level{}
		err := v.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketScanned)
			if b == nil {
				return nil
			}
			return b.ForEach(func(k, data []byte) error {
				if !strings.Contains(string(k), "@") {
					return nil // the matched database's key
				}
				var e struct {
					Report *scan.Report `json:"report"`
				}
				if json.Unmarshal(data, &e) != nil {
					return nil
				}
				if l, ok := worstOf(e.Report); ok {
					worst[string(k)] = l
				}
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
		v.worst, v.loaded = worst, true
	}
	out := make(map[osv.Level]int, len(severities))
	for _, l := range v.worst {
		out[l]++
	}
	return out, nil
}
