package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
)

// ReportArtifact packs a scan report as a referrer of subject (the image's manifest
// descriptor): the empty config and one MediaTypeReport layer holding the report's JSON,
// annotated with the created time, the database version (AnnotationDBDigest,
// AnnotationDBModified) and the number of findings in total and by severity, so that a
// referrers listing shows the summary without fetching the report. It returns
// ErrInvalidArtifact for a subject without a media type, size or valid digest.
func ReportArtifact(subject ocispec.Descriptor, r *scan.Report, createdAt time.Time) (*Artifact, error) {
	doc, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	annotations := map[string]string{
		ocispec.AnnotationCreated: created(createdAt),
		AnnotationDBDigest:        r.DB.Digest,
		AnnotationDBModified:      r.DB.Modified.UTC().Format(time.RFC3339),
		AnnotationFindings:        strconv.Itoa(len(r.Findings)),
		AnnotationPackages:        strconv.Itoa(r.Packages),
	}
	for l, n := range SeverityCounts(r) {
		annotations[AnnotationSeverityPrefix+strings.ToLower(string(l))] = strconv.Itoa(n)
	}
	return referrer(ArtifactTypeReport, MediaTypeReport, subject, doc, annotations)
}

// SeverityCounts counts a report's findings by severity; every level is present.
func SeverityCounts(r *scan.Report) map[osv.Level]int {
	c := map[osv.Level]int{osv.Critical: 0, osv.High: 0, osv.Medium: 0, osv.Low: 0, osv.Unknown: 0}
	for _, f := range r.Findings {
		l := f.Severity.Level
		if l.Rank() < 0 {
			l = osv.Unknown
		}
		c[l]++
	}
	return c
}

// ReadReport reads a report artifact: its manifest, then its report layer (at most
// MaxDocumentBytes, checked against its digest). It returns the report and the manifest
// (for its subject and annotations), or ErrInvalidArtifact, ErrBlobMismatch, ErrTooLarge
// and the fetch function's errors.
func ReadReport(ctx context.Context, fetch Fetch, manifest []byte) (*scan.Report, *ocispec.Manifest, error) {
	m, doc, err := readDocument(ctx, fetch, manifest, ArtifactTypeReport, MediaTypeReport)
	if err != nil {
		return nil, nil, err
	}
	var r scan.Report
	if err := json.Unmarshal(doc, &r); err != nil {
		return nil, nil, fmt.Errorf("%w: report: %v", ErrInvalidArtifact, err)
	}
	return &r, m, nil
}
