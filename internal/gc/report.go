package gc

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// maxDeletedListed bounds the deletions a report lists; its counts are
// always complete.
const maxDeletedListed = 10000

// Report is what one collection kept and deleted, and why.
type Report struct {
	ID              string    `json:"id"`
	DryRun          bool      `json:"dryRun"`
	Holder          string    `json:"holder"`
	Started         time.Time `json:"started"`
	Finished        time.Time `json:"finished"`
	DurationSeconds float64   `json:"durationSeconds"`
	MarkSeconds     float64   `json:"markSeconds"`
	SweepSeconds    float64   `json:"sweepSeconds"`
	Repositories    int       `json:"repositories"`
	Tags            Counts    `json:"tags"`
	Manifests       Counts    `json:"manifests"`
	Blobs           Counts    `json:"blobs"`
	Uploads         Counts    `json:"uploads"`
	// UnnamedData counts the data objects deleted that no path named
	// (S3: see storage.Driver.DeleteUnnamedData).
	UnnamedData      int       `json:"unnamedData,omitempty"`
	BytesReclaimed   int64     `json:"bytesReclaimed"`
	Deleted          []Deleted `json:"deleted,omitempty"`
	DeletedTruncated bool      `json:"deletedTruncated,omitempty"`
	Error            string    `json:"error,omitempty"`
}

// Counts of one kind of thing.
type Counts struct {
	Kept    int `json:"kept"`
	Deleted int `json:"deleted"`
	// Spared are candidates a client was told exist during the collection.
	Spared int `json:"spared,omitempty"`
}

// Deleted is one deletion (or, in a dry run, one that would be made).
type Deleted struct {
	Kind       string        `json:"kind"` // tag, manifest, blob, upload
	Repository string        `json:"repository,omitempty"`
	Tag        string        `json:"tag,omitempty"`
	Digest     digest.Digest `json:"digest,omitempty"`
	Upload     string        `json:"upload,omitempty"`
	Size       int64         `json:"size,omitempty"`
	Reason     string        `json:"reason"`
}

// Reasons for a deletion.
const (
	ReasonRetention      = "retention: not kept by any rule"
	ReasonUntagged       = "untagged"
	ReasonSubjectDeleted = "subject deleted"
	ReasonUnreferenced   = "unreferenced"
	ReasonAbandoned      = "abandoned upload"
)

func (r *Report) add(d Deleted) {
	switch d.Kind {
	case "tag":
		r.Tags.Deleted++
	case "manifest":
		r.Manifests.Deleted++
	case "blob":
		r.Blobs.Deleted++
		r.BytesReclaimed += d.Size
	case "upload":
		r.Uploads.Deleted++
	}
	if len(r.Deleted) < maxDeletedListed {
		r.Deleted = append(r.Deleted, d)
	} else {
		r.DeletedTruncated = true
	}
}

// Summary returns the report without its list of deletions.
func (r Report) Summary() Report {
	r.Deleted = nil
	return r
}
