package e2e

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestHelmChart lints the chart, renders it with several value sets, and
// validates the configuration file each rendering carries with the binary.
func TestHelmChart(t *testing.T) {
	t.Parallel()
	helm := tool(t, "helm")
	chart, _ := filepath.Abs("../charts/portcullis")
	run(t, nil, helm, "lint", "--strict", chart)
	for name, set := range map[string][]string{
		"defaults": nil,
		"tls":      {"--set", "tls.secretName=registry-tls"},
		"tuned":    {"--set", "config.log.level=debug", "--set", "config.http.shutdownGrace=10s", "--set", "persistence.enabled=false"},
		"s3 and auth": {"--set", "config.storage.s3.endpoint=https://s3.example.com", "--set", "config.storage.s3.bucket=registry",
			"--set", "config.auth.enabled=true", "--set", "config.auth.token.signingKeyFile=/etc/portcullis/auth/key.pem",
			"--set", "config.auth.token.realm=https://registry.example.com/token",
			"--set", "extraVolumes[0].name=auth", "--set", "extraVolumes[0].secret.secretName=registry-auth",
			"--set", "extraVolumeMounts[0].name=auth", "--set", "extraVolumeMounts[0].mountPath=/etc/portcullis/auth"},
	} {
		t.Run(name, func(t *testing.T) {
			out := run(t, nil, helm, append([]string{"template", "reg", chart}, set...)...)
			cfg := renderedConfig(t, out)
			f := filepath.Join(t.TempDir(), "config.yml")
			writeFile(t, f, cfg)
			if out, err := exec.Command(registryBin, "config", "validate", f).CombinedOutput(); err != nil {
				t.Fatalf("rendered config is invalid: %v\n%s\n%s", err, out, cfg)
			}
			if !strings.Contains(cfg, "addr: 0.0.0.0:5000") || !strings.Contains(cfg, "dataDir: /var/lib/portcullis") {
				t.Errorf("rendered config lacks the pod's address or data dir:\n%s", cfg)
			}
			if name == "tls" && !strings.Contains(cfg, "certFile: /etc/portcullis/tls/tls.crt") {
				t.Errorf("TLS values did not reach the config:\n%s", cfg)
			}
		})
	}
}

// renderedConfig returns config.yml from the chart's ConfigMap.
func renderedConfig(t *testing.T, manifests string) string {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewBufferString(manifests))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered chart is not YAML: %v", err)
		}
		if doc.Kind == "ConfigMap" && doc.Data["config.yml"] != "" {
			return doc.Data["config.yml"]
		}
	}
	t.Fatal("no ConfigMap with config.yml in the rendered chart")
	return ""
}
