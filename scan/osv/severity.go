package osv

import (
	"strings"

	gocvss20 "github.com/pandatix/go-cvss/20"
	gocvss30 "github.com/pandatix/go-cvss/30"
	gocvss31 "github.com/pandatix/go-cvss/31"
	gocvss40 "github.com/pandatix/go-cvss/40"
)

// Level is a severity bucket.
type Level string

// Severity levels, from the CVSS qualitative rating scale, plus Unknown for records that
// carry no usable severity.
const (
	Unknown  Level = "UNKNOWN"
	Low      Level = "LOW"
	Medium   Level = "MEDIUM"
	High     Level = "HIGH"
	Critical Level = "CRITICAL"
)

// Rank orders levels: Unknown 0, Low 1, Medium 2, High 3, Critical 4. Anything else is -1.
func (l Level) Rank() int {
	switch l {
	case Unknown:
		return 0
	case Low:
		return 1
	case Medium:
		return 2
	case High:
		return 3
	case Critical:
		return 4
	}
	return -1
}

// ParseLevel reads a level name, case-insensitively; GitHub's "MODERATE" is Medium.
// It returns false for anything else.
func ParseLevel(s string) (Level, bool) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "CRITICAL":
		return Critical, true
	case "HIGH":
		return High, true
	case "MEDIUM", "MODERATE":
		return Medium, true
	case "LOW":
		return Low, true
	case "UNKNOWN":
		return Unknown, true
	}
	return "", false
}

// Rating is a record's severity: the bucket, and the CVSS base score it came from (0 when
// it came from database_specific.severity or is Unknown).
type Rating struct {
	Level Level   `json:"level"`
	Score float64 `json:"score,omitempty"`
	// Vector is the CVSS vector the score was computed from.
	Vector string `json:"vector,omitempty"`
}

// Rate computes the record's severity. It prefers a CVSS v4 vector, then v3.1/v3.0, then
// v2, from the severity list (computing the base score); then database_specific.severity;
// else Unknown. Vectors that do not parse are skipped.
func (r *Record) Rate() Rating {
	for _, typ := range []string{"CVSS_V4", "CVSS_V3", "CVSS_V2"} {
		for _, s := range r.Severity {
			if s.Type != typ {
				continue
			}
			if score, ok := baseScore(s.Score); ok {
				return Rating{Level: bucket(score), Score: score, Vector: s.Score}
			}
		}
	}
	if l, ok := ParseLevel(r.DatabaseSpecific.Severity); ok {
		return Rating{Level: l}
	}
	return Rating{Level: Unknown}
}

func baseScore(vector string) (float64, bool) {
	switch {
	case strings.HasPrefix(vector, "CVSS:4.0/"):
		c, err := gocvss40.ParseVector(vector)
		if err != nil {
			return 0, false
		}
		return c.Score(), true
	case strings.HasPrefix(vector, "CVSS:3.1/"):
		c, err := gocvss31.ParseVector(vector)
		if err != nil {
			return 0, false
		}
		return c.BaseScore(), true
	case strings.HasPrefix(vector, "CVSS:3.0/"):
		c, err := gocvss30.ParseVector(vector)
		if err != nil {
			return 0, false
		}
		return c.BaseScore(), true
	default:
		c, err := gocvss20.ParseVector(vector)
		if err != nil {
			return 0, false
		}
		return c.BaseScore(), true
	}
}

// bucket maps a base score onto the CVSS v3/v4 qualitative scale; a score of 0.0 ("None")
// counts as Low.
func bucket(score float64) Level {
	switch {
	case score >= 9.0:
		return Critical
	case score >= 7.0:
		return High
	case score >= 4.0:
		return Medium
	default:
		return Low
	}
}
