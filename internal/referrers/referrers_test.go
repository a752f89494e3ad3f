package referrers

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestIndexAddListRemove(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	x, err := NewIndex(drv)
	if err != nil {
		t.Fatal(err)
	}
	subject := digest.FromString("subject")
	a := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("a"), Size: 10, ArtifactType: "application/x.sig"}
	b := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("b"), Size: 20, ArtifactType: "application/x.sbom",
		Annotations: map[string]string{"k": "v"}}
	for _, d := range []v1.Descriptor{a, b, a} { // adding twice is idempotent
		if err := x.Add(ctx, "team/app", subject, d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.List(ctx, "team/app", subject)
	if err != nil {
		t.Fatal(err)
	}
	want := []v1.Descriptor{a, b}
	if want[0].Digest > want[1].Digest {
		want[0], want[1] = want[1], want[0]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	// Other repositories and subjects are separate.
	if got, _ := x.List(ctx, "team/other", subject); len(got) != 0 {
		t.Errorf("other repo lists %v", got)
	}
	if got, _ := x.List(ctx, "team/app", digest.FromString("nothing")); got == nil || len(got) != 0 {
		t.Errorf("unknown subject lists %#v, want empty non-nil", got)
	}
	if err := x.Remove(ctx, "team/app", subject, a.Digest); err != nil {
		t.Fatal(err)
	}
	if err := x.Remove(ctx, "team/app", subject, a.Digest); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	got, _ = x.List(ctx, "team/app", subject)
	if len(got) != 1 || got[0].Digest != b.Digest {
		t.Errorf("after Remove: %v", got)
	}
	// A torn or foreign file in the index is ignored, not served.
	if err := drv.PutContent(ctx, subjectDir("team/app", subject)+"/sha256-garbage", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if got, err := x.List(ctx, "team/app", subject); err != nil || len(got) != 1 {
		t.Errorf("with a torn entry: %v, %v", got, err)
	}
	if ok, _ := x.Complete(ctx, "team/app"); ok {
		t.Error("index complete before MarkComplete")
	}
	if err := x.MarkComplete(ctx, "team/app"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := x.Complete(ctx, "team/app"); !ok {
		t.Error("index not complete after MarkComplete")
	}
}

func TestDescribe(t *testing.T) {
	subject := digest.FromString("s")
	tests := []struct {
		name        string
		mediaType   string
		manifest    map[string]any
		wantSubject digest.Digest
		wantType    string
	}{
		{name: "artifactType wins", mediaType: v1.MediaTypeImageManifest, manifest: map[string]any{
			"mediaType": v1.MediaTypeImageManifest, "artifactType": "application/x.a",
			"config":  map[string]any{"mediaType": "application/vnd.oci.empty.v1+json"},
			"subject": map[string]any{"mediaType": v1.MediaTypeImageManifest, "digest": subject, "size": 1}},
			wantSubject: subject, wantType: "application/x.a"},
		{name: "config type for images", mediaType: v1.MediaTypeImageManifest, manifest: map[string]any{
			"config":  map[string]any{"mediaType": "application/x.cfg"},
			"subject": map[string]any{"digest": subject}},
			wantSubject: subject, wantType: "application/x.cfg"},
		{name: "index without artifactType", mediaType: v1.MediaTypeImageIndex, manifest: map[string]any{
			"mediaType": v1.MediaTypeImageIndex, "subject": map[string]any{"digest": subject}},
			wantSubject: subject, wantType: ""},
		{name: "no subject", mediaType: v1.MediaTypeImageManifest, manifest: map[string]any{"config": map[string]any{"mediaType": "x"}}, wantType: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, _ := json.Marshal(tt.manifest)
			s, d, err := Describe(tt.mediaType, payload)
			if err != nil {
				t.Fatal(err)
			}
			if s != tt.wantSubject || d.ArtifactType != tt.wantType || d.Digest != digest.FromBytes(payload) || d.Size != int64(len(payload)) {
				t.Errorf("Describe = %s, %+v", s, d)
			}
		})
	}
	if _, _, err := Describe(v1.MediaTypeImageManifest, []byte(`{"subject":{"digest":"sha256:nope"}}`)); err == nil {
		t.Error("Describe accepted an invalid subject digest")
	}
}

func FuzzDescribe(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"a","subject":{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}`))
	f.Add([]byte(`{"subject":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		subject, desc, err := Describe(v1.MediaTypeImageManifest, payload)
		if err != nil {
			return
		}
		if subject != "" && subject.Validate() != nil {
			t.Fatalf("invalid subject %q", subject)
		}
		if desc.Digest != digest.FromBytes(payload) || desc.Size != int64(len(payload)) {
			t.Fatalf("descriptor does not describe the payload: %+v", desc)
		}
		if SubjectOf(payload) != subject {
			t.Fatalf("SubjectOf = %q, Describe = %q", SubjectOf(payload), subject)
		}
	})
}
