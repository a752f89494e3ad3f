package scan

import "testing"

func TestClassify(t *testing.T) {
	t.Parallel()
	const (
		oci   = "application/vnd.oci.image.manifest.v1+json"
		image = `"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}]`
	)
	tests := []struct {
		name, mt, body string
		want           ManifestKind
	}{
		{"image", oci, `{` + image + `}`, KindImage},
		{"image with a subject", oci, `{` + image + `,"subject":{"digest":"sha256:0"}}`, KindImage},
		{"image typed by its body", "", `{"mediaType":"` + oci + `",` + image + `}`, KindImage},
		{"signature", oci, `{"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"subject":{"digest":"sha256:0"}}`, KindOther},
		{"attestation manifest", oci, `{"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[{"mediaType":"application/vnd.in-toto+json"}]}`, KindOther},
		{"index", "application/vnd.oci.image.index.v1+json", `{"manifests":[]}`, KindIndex},
		{"not JSON", oci, `{`, KindOther},
	}
	for _, tt := range tests {
		if got := Classify(tt.mt, []byte(tt.body)); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
