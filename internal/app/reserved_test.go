package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/testenv"
	"github.com/portcullis/portcullis/scan/artifact"
)

// TestReservedArtifactTypes: a client cannot push a manifest typed as the
// scanner's report or inventory, or as the vulnerability database, whether
// by artifactType or by config media type: the scanner trusts the newest
// one it finds, so a forged empty report (created far in the future) would
// lift a quarantine. Other referrers, SBOMs included, are pushed as usual.
func TestReservedArtifactTypes(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	const repo = "team/forged"
	img, _ := random.Image(256, 1)
	if err := remote.Write(mustRef(t, reg.Host+"/"+repo+":v1"), img); err != nil {
		t.Fatal(err)
	}
	subject, err := partialDescriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	// The blobs exist, so that a refusal is the type's and nothing else's.
	config, doc := []byte("{}"), []byte(`{"findings":[]}`)
	for _, b := range [][]byte{config, doc} {
		put(t, startUpload(t, reg.URL, repo)+"&digest="+digest.FromBytes(b).String(), "application/octet-stream", b, http.StatusCreated, "")
	}
	manifest := func(mediaType, artifactType, configType, annotation string) []byte {
		t.Helper()
		annotations := map[string]string{ocispec.AnnotationCreated: time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)}
		if annotation != "" {
			annotations[annotation] = "1"
		}
		m := map[string]any{
			"schemaVersion": 2, "mediaType": mediaType,
			"subject":     ocispec.Descriptor{MediaType: string(subject.MediaType), Digest: digest.Digest(subject.Digest.String()), Size: subject.Size},
			"annotations": annotations,
		}
		if artifactType != "" {
			m["artifactType"] = artifactType
		}
		if mediaType == ocispec.MediaTypeImageIndex {
			m["manifests"] = []ocispec.Descriptor{}
		} else {
			m["config"] = ocispec.Descriptor{MediaType: configType, Digest: digest.FromBytes(config), Size: int64(len(config))}
			m["layers"] = []ocispec.Descriptor{{MediaType: "application/json", Digest: digest.FromBytes(doc), Size: int64(len(doc))}}
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name, mediaType, artifactType, configType, annotation string
		refused                                               bool
	}{
		{"report", ocispec.MediaTypeImageManifest, artifact.ArtifactTypeReport, ocispec.MediaTypeEmptyJSON, "", true},
		{"inventory", ocispec.MediaTypeImageManifest, artifact.ArtifactTypeInventory, ocispec.MediaTypeEmptyJSON, "", true},
		{"report by config media type", ocispec.MediaTypeImageManifest, "", artifact.ArtifactTypeReport, "", true},
		{"inventory in config, other artifactType", ocispec.MediaTypeImageManifest, "application/vnd.example.thing", artifact.ArtifactTypeInventory, "", true},
		{"upper-case report", ocispec.MediaTypeImageManifest, strings.ToUpper(artifact.ArtifactTypeReport), ocispec.MediaTypeEmptyJSON, "", true},
		{"vulnerability database", ocispec.MediaTypeImageManifest, artifact.ArtifactTypeVulnDB, artifact.MediaTypeVulnDBConfig, "", true},
		{"index typed as a report", ocispec.MediaTypeImageIndex, artifact.ArtifactTypeReport, "", "", true},
		{"SBOM with the scanner's annotation", ocispec.MediaTypeImageManifest, artifact.ArtifactTypeSBOM, ocispec.MediaTypeEmptyJSON, artifact.AnnotationPackages, true},
		{"upper-case scanner annotation", ocispec.MediaTypeImageManifest, "application/vnd.example.thing", ocispec.MediaTypeEmptyJSON, strings.ToUpper(artifact.AnnotationFindings), true},
		{"SBOM", ocispec.MediaTypeImageManifest, artifact.ArtifactTypeSBOM, ocispec.MediaTypeEmptyJSON, "", false},
		{"SPDX", ocispec.MediaTypeImageManifest, "application/spdx+json", ocispec.MediaTypeEmptyJSON, "org.example.note", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := manifest(tt.mediaType, tt.artifactType, tt.configType, tt.annotation)
			d := digest.FromBytes(body)
			for _, ref := range []string{d.String(), "forged"} {
				req, _ := http.NewRequest(http.MethodPut, reg.URL+"/v2/"+repo+"/manifests/"+ref, strings.NewReader(string(body)))
				req.Header.Set("Content-Type", tt.mediaType)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var oe ociErrors
				_ = json.NewDecoder(resp.Body).Decode(&oe)
				resp.Body.Close()
				if !tt.refused {
					if resp.StatusCode != http.StatusCreated {
						t.Errorf("PUT %s: %d %+v, want 201", ref, resp.StatusCode, oe)
					}
					continue
				}
				if resp.StatusCode != http.StatusForbidden || len(oe.Errors) != 1 || oe.Errors[0].Code != "DENIED" ||
					!strings.Contains(oe.Errors[0].Message, "reserved for the registry's scanner") {
					t.Errorf("PUT %s: %d %+v, want 403 DENIED reserved for the registry's scanner", ref, resp.StatusCode, oe)
				}
			}
			if !tt.refused {
				return
			}
			resp, err := http.Head(reg.URL + "/v2/" + repo + "/manifests/" + d.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("the refused manifest is stored: HEAD %d", resp.StatusCode)
			}
		})
	}
	// Nothing refused shows up among the image's referrers.
	resp, err := http.Get(reg.URL + "/v2/" + repo + "/referrers/" + subject.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var idx ocispec.Index
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		t.Fatal(err)
	}
	for _, m := range idx.Manifests {
		if artifact.Reserved(m.ArtifactType) {
			t.Errorf("referrer %s of reserved type %s", m.Digest, m.ArtifactType)
		}
	}
	if len(idx.Manifests) != 2 {
		t.Errorf("%d referrers, want the SBOM and the SPDX document", len(idx.Manifests))
	}
}
