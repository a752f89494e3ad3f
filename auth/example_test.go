package auth

import (
	"bytes"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/config"
)

// TestExampleSnippet keeps example.yml (pasted into config.example.yml)
// strictly decodable and equal to the provisioned defaults.
func TestExampleSnippet(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Auth config.Auth `yaml:"auth"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	var want config.Auth
	want.Provision()
	if diff := cmp.Diff(want, got.Auth, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("example.yml differs from the defaults (-want +got):\n%s", diff)
	}
	if errs := got.Auth.Validate("auth"); len(errs) > 0 {
		t.Errorf("example.yml invalid: %v", errs)
	}
}
