package artifact

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/inventory"
)

// CycloneDX is the subset of a CycloneDX 1.5 BOM that SBOM writes.
type CycloneDX struct {
	BOMFormat   string      `json:"bomFormat"`
	SpecVersion string      `json:"specVersion"`
	Version     int         `json:"version"`
	Metadata    BOMMetadata `json:"metadata"`
	Components  []Component `json:"components"`
}

// BOMMetadata is a BOM's metadata: when, by what, about what.
type BOMMetadata struct {
	Timestamp string     `json:"timestamp,omitempty"`
	Tools     *BOMTools  `json:"tools,omitempty"`
	Component *Component `json:"component,omitempty"`
}

// BOMTools lists the tools that made the BOM (the 1.5 form).
type BOMTools struct {
	Components []Component `json:"components"`
}

// Component is a CycloneDX component.
type Component struct {
	Type        string     `json:"type"`
	BOMRef      string     `json:"bom-ref,omitempty"`
	Group       string     `json:"group,omitempty"`
	Name        string     `json:"name"`
	Version     string     `json:"version,omitempty"`
	Description string     `json:"description,omitempty"`
	PURL        string     `json:"purl,omitempty"`
	Properties  []Property `json:"properties,omitempty"`
	Evidence    *Evidence  `json:"evidence,omitempty"`
}

// Property is a name/value pair; names we write start with "portcullis:".
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Evidence lists where a component was found.
type Evidence struct {
	Occurrences []Occurrence `json:"occurrences,omitempty"`
}

// Occurrence is one file a component was found in, relative to the image root.
type Occurrence struct {
	Location string `json:"location"`
}

// SBOM writes a CycloneDX 1.5 JSON SBOM of an image from its stored inventory: the image as
// the metadata component (a container named by its manifest digest, or its config digest),
// its distribution as an operating-system component, and one library component per package
// URL, with every file it was found in as an evidence occurrence. Package URLs follow the
// purl spec per type: pkg:deb/debian/NAME@VERSION?distro=debian-12, pkg:apk/alpine/...,
// pkg:golang/MODULE@vVERSION, pkg:npm/[%40SCOPE/]NAME@VERSION, pkg:pypi/NAME@VERSION,
// pkg:maven/GROUP/ARTIFACT@VERSION. The output is deterministic for a given input.
func SBOM(inv *scan.StoredInventory, createdAt time.Time) ([]byte, error) {
	bom := CycloneDX{
		BOMFormat:   "CycloneDX",
		SpecVersion: "1.5",
		Version:     1,
		Metadata: BOMMetadata{
			Timestamp: created(createdAt),
			Tools:     &BOMTools{Components: []Component{{Type: "application", Name: "portcullis"}}},
			Component: &Component{Type: "container", BOMRef: "image", Name: cmp.Or(inv.Image.Digest, inv.Image.ID)},
		},
		Components: []Component{},
	}
	if inv.Image.Digest != "" && inv.Image.ID != "" {
		bom.Metadata.Component.Properties = []Property{{Name: "portcullis:image:id", Value: inv.Image.ID}}
	}
	rel := inv.Inventory.OS
	if rel != nil && rel.ID != "" {
		bom.Components = append(bom.Components, Component{
			Type: "operating-system", BOMRef: "os:" + rel.ID + "@" + rel.VersionID,
			Name: rel.ID, Version: rel.VersionID, Description: rel.PrettyName,
		})
	}
	byRef := map[string]*Component{}
	var order []string
	for _, p := range inv.Inventory.Packages {
		purl := PackageURL(p, rel)
		ref := cmp.Or(purl, "pkg:"+p.Type+"/"+p.Name+"@"+p.Version)
		c := byRef[ref]
		if c == nil {
			c = &Component{Type: "library", BOMRef: ref, Name: p.Name, Version: p.Version, PURL: purl, Evidence: &Evidence{}}
			if p.Ecosystem == inventory.EcosystemMaven {
				if g, a, ok := strings.Cut(p.Name, ":"); ok {
					c.Group, c.Name = g, a
				}
			}
			c.Properties = append(c.Properties, Property{"portcullis:package:type", p.Type}, Property{"portcullis:package:ecosystem", p.Ecosystem})
			if p.SourceName != "" && (p.SourceName != p.Name || p.SourceVersion != p.Version) {
				c.Properties = append(c.Properties, Property{"portcullis:package:source", p.SourceName + "@" + p.SourceVersion})
			}
			byRef[ref] = c
			order = append(order, ref)
		}
		if !slices.ContainsFunc(c.Evidence.Occurrences, func(o Occurrence) bool { return o.Location == p.Location }) {
			c.Evidence.Occurrences = append(c.Evidence.Occurrences, Occurrence{Location: p.Location})
		}
	}
	slices.Sort(order)
	for _, ref := range order {
		c := byRef[ref]
		slices.SortFunc(c.Evidence.Occurrences, func(a, b Occurrence) int { return strings.Compare(a.Location, b.Location) })
		bom.Components = append(bom.Components, *c)
	}
	b, err := json.Marshal(bom)
	if err != nil {
		return nil, fmt.Errorf("encode sbom: %w", err)
	}
	return b, nil
}

// PackageURL returns the purl of an inventory package, rel being the image's distribution
// (nil when unknown); "" for a package type it does not know.
func PackageURL(p inventory.Package, rel *inventory.OSRelease) string {
	var typ, ns, name, version string
	var quals []string
	version = p.Version
	switch p.Type {
	case inventory.TypeDpkg, inventory.TypeApk:
		typ, ns = "deb", "debian"
		if p.Type == inventory.TypeApk {
			typ, ns = "apk", "alpine"
		}
		if rel != nil && rel.ID != "" {
			ns = strings.ToLower(rel.ID)
			if rel.VersionID != "" {
				quals = append(quals, "distro="+escape(ns+"-"+rel.VersionID))
			}
		}
		name = p.Name
	case inventory.TypeRpm:
		typ, name = "rpm", p.Name
		if rel != nil && rel.ID != "" {
			ns = strings.ToLower(rel.ID)
			if rel.VersionID != "" {
				quals = append(quals, "distro="+escape(ns+"-"+rel.VersionID))
			}
		}
		// The purl of an rpm carries its epoch as a qualifier, not in the version.
		if epoch, vr, ok := strings.Cut(version, ":"); ok {
			version = vr
			quals = append(quals, "epoch="+escape(epoch))
		}
	case inventory.TypeGoBinary:
		typ = "golang"
		ns, name = splitLast(p.Name)
		if version != "" && version != "(devel)" {
			version = "v" + version
		} else {
			version = ""
		}
	case inventory.TypeNpm:
		typ = "npm"
		if strings.HasPrefix(p.Name, "@") {
			ns, name, _ = strings.Cut(p.Name, "/")
		} else {
			name = p.Name
		}
	case inventory.TypePython:
		typ = "pypi"
		name = strings.ReplaceAll(strings.ToLower(p.Name), "_", "-")
	case inventory.TypeJava:
		typ = "maven"
		if g, a, ok := strings.Cut(p.Name, ":"); ok {
			ns, name = g, a
		} else {
			name = p.Name
		}
	default:
		return ""
	}
	if name == "" {
		return ""
	}
	var b strings.Builder
	b.WriteString("pkg:" + typ + "/")
	if ns != "" {
		for seg := range strings.SplitSeq(ns, "/") {
			if seg != "" {
				b.WriteString(escape(seg) + "/")
			}
		}
	}
	b.WriteString(escape(name))
	if version != "" {
		b.WriteString("@" + escape(version))
	}
	if len(quals) > 0 {
		b.WriteString("?" + strings.Join(quals, "&"))
	}
	return b.String()
}

func splitLast(path string) (string, string) {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return "", path
}

// escape percent-encodes everything but the unreserved characters of RFC 3986.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// SBOMArtifact packs a CycloneDX JSON SBOM as a referrer of subject: the empty config and one
// MediaTypeSBOM layer. It returns ErrInvalidArtifact for an invalid subject or an SBOM that
// ParseSBOM refuses.
func SBOMArtifact(subject ocispec.Descriptor, sbom []byte, createdAt time.Time) (*Artifact, error) {
	bom, err := ParseSBOM(sbom)
	if err != nil {
		return nil, err
	}
	annotations := map[string]string{
		ocispec.AnnotationCreated: created(createdAt),
		AnnotationPackages:        strconv.Itoa(len(bom.Components)),
	}
	return referrer(ArtifactTypeSBOM, MediaTypeSBOM, subject, sbom, annotations)
}

// ParseSBOM decodes a CycloneDX JSON document (of any producer) into the subset SBOM writes.
// It returns ErrTooLarge over MaxDocumentBytes and ErrInvalidArtifact when it is not JSON,
// its bomFormat is not CycloneDX or its specVersion is not 1.x.
func ParseSBOM(data []byte) (*CycloneDX, error) {
	if len(data) > MaxDocumentBytes {
		return nil, fmt.Errorf("%w: sbom of %d bytes", ErrTooLarge, len(data))
	}
	var bom CycloneDX
	if err := json.Unmarshal(data, &bom); err != nil {
		return nil, fmt.Errorf("%w: sbom: %v", ErrInvalidArtifact, err)
	}
	if bom.BOMFormat != "CycloneDX" || !strings.HasPrefix(bom.SpecVersion, "1.") {
		return nil, fmt.Errorf("%w: sbom: bomFormat %q specVersion %q, want CycloneDX 1.x", ErrInvalidArtifact, bom.BOMFormat, bom.SpecVersion)
	}
	return &bom, nil
}

// ReadSBOM reads an SBOM artifact and decodes its document with ParseSBOM. It returns the
// document as stored, its decoding and the manifest, or the errors of ReadReport.
func ReadSBOM(ctx context.Context, fetch Fetch, manifest []byte) ([]byte, *CycloneDX, *ocispec.Manifest, error) {
	m, doc, err := readDocument(ctx, fetch, manifest, ArtifactTypeSBOM, MediaTypeSBOM)
	if err != nil {
		return nil, nil, nil, err
	}
	bom, err := ParseSBOM(doc)
	if err != nil {
		return nil, nil, nil, err
	}
	return doc, bom, m, nil
}
