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
	cases := map[string][]string{
		"defaults": nil,
		"tls":      {"--set", "tls.secretName=registry-tls"},
		"tuned":    {"--set", "config.log.level=debug", "--set", "config.http.shutdownGrace=10s", "--set", "persistence.enabled=false"},
		"s3 and auth": {"--set", "config.storage.s3.endpoint=https://s3.example.com", "--set", "config.storage.s3.bucket=registry",
			"--set", "config.auth.enabled=true", "--set", "config.auth.token.signingKeyFile=/etc/portcullis/auth/key.pem",
			"--set", "config.auth.token.realm=https://registry.example.com/token",
			"--set", "extraVolumes[0].name=auth", "--set", "extraVolumes[0].secret.secretName=registry-auth",
			"--set", "extraVolumeMounts[0].name=auth", "--set", "extraVolumeMounts[0].mountPath=/etc/portcullis/auth"},
	}
	// Every values file under ci/ (helm's chart-testing convention).
	files, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("ci values files: %v %v", files, err)
	}
	for _, f := range files {
		name := "ci/" + filepath.Base(f)
		cases[name] = []string{"-f", f}
		run(t, nil, helm, "lint", "--strict", chart, "-f", f)
	}
	for name, set := range cases {
		t.Run(name, func(t *testing.T) {
			out := run(t, nil, helm, append([]string{"template", "reg", chart}, set...)...)
			cfg := renderedConfig(t, out)
			f := filepath.Join(t.TempDir(), "config.yml")
			writeFile(t, f, cfg)
			if out, err := exec.Command(registryBin, "config", "validate", "--skip-files", f).CombinedOutput(); err != nil {
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

// TestHelmChartRefusals checks that the chart refuses, with a message
// saying why, what would install but not work.
func TestHelmChartRefusals(t *testing.T) {
	t.Parallel()
	helm := tool(t, "helm")
	chart, _ := filepath.Abs("../charts/portcullis")
	s3 := []string{"--set", "config.storage.s3.endpoint=https://s3.example.com", "--set", "config.storage.s3.bucket=registry"}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"filesystem with 3 replicas", []string{"--set", "replicaCount=3"}, "with filesystem storage"},
		{"filesystem with autoscaling", []string{"--set", "autoscaling.enabled=true"}, "with filesystem storage"},
		{"filesystem ci file with 3 replicas", []string{"-f", filepath.Join(chart, "ci", "filesystem-values.yaml"), "--set", "replicaCount=3"}, "with filesystem storage"},
		{"3 replicas without an upload secret", append([]string{"--set", "replicaCount=3"}, s3...), "without a shared upload secret"},
		{"autoscaling without an upload secret", append([]string{"--set", "autoscaling.enabled=true"}, s3...), "without a shared upload secret"},
		{"s3 ci file without its upload secret", []string{"-f", filepath.Join(chart, "ci", "s3-3-replicas-values.yaml"), "--set", "secrets.upload.existingSecret="}, "without a shared upload secret"},
		{"termination grace within the shutdown grace", []string{"--set", "config.http.shutdownGrace=1m", "--set", "terminationGracePeriodSeconds=60"}, "is not above preStopSleepSeconds plus config.http.shutdownGrace (65s)"},
		{"a misspelled value", []string{"--set", "replicaCout=1"}, "replicaCout"},
		{"a misspelled config key", []string{"--set", "config.http.shutdowngrace=10s"}, "shutdowngrace"},
		{"a misspelled secrets key", []string{"--set", "secrets.upload.existingsecret=x"}, "existingsecret"},
		{"a short upload secret", []string{"--set", "secrets.upload.value=short"}, "secrets/upload/value"},
		{"dataDir set", []string{"--set", "config.dataDir=/elsewhere"}, "dataDir"},
		{"auth without a public URL", []string{"--set", "config.auth.enabled=true"}, "config.auth.enabled needs config.http.host"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runErr(nil, helm, append([]string{"template", "reg", chart}, tt.args...)...)
			if err == nil {
				t.Fatalf("rendered; want a refusal naming %q", tt.want)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("refusal does not say %q:\n%s", tt.want, out)
			}
		})
	}
	// The same settings with what they lack render.
	for _, args := range [][]string{
		{"--set", "replicaCount=1"},
		{"--set", "config.auth.enabled=true", "--set", "config.http.host=https://registry.example.com"},
		{"--set", "config.auth.enabled=true", "--set", "config.auth.token.realm=https://registry.example.com/token"},
		append([]string{"--set", "replicaCount=3", "--set", "secrets.upload.value=0123456789abcdef"}, s3...),
		append([]string{"--set", "replicaCount=3", "--set", "config.http.secretFile=/run/upload-secret"}, s3...),
		{"--set", "config.http.shutdownGrace=1m", "--set", "terminationGracePeriodSeconds=66"},
		{"--set", "config.http.shutdownGrace=1m", "--set", "terminationGracePeriodSeconds=61", "--set", "preStopSleepSeconds=0"},
	} {
		if out, err := runErr(nil, helm, append([]string{"template", "reg", chart}, args...)...); err != nil {
			t.Errorf("%v refused: %v\n%s", args, err, out)
		}
	}
}

// TestHelmChartChecksums checks that a change of the configuration or of
// a chart-made Secret changes the pod template, so the pods roll.
func TestHelmChartChecksums(t *testing.T) {
	t.Parallel()
	helm := tool(t, "helm")
	chart, _ := filepath.Abs("../charts/portcullis")
	annotations := func(args ...string) map[string]string {
		t.Helper()
		out := run(t, nil, helm, append([]string{"template", "reg", chart, "--show-only", "templates/workload.yaml"}, args...)...)
		var w struct {
			Spec struct {
				Template struct {
					Metadata struct {
						Annotations map[string]string `yaml:"annotations"`
					} `yaml:"metadata"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal([]byte(out), &w); err != nil {
			t.Fatal(err)
		}
		return w.Spec.Template.Metadata.Annotations
	}
	token := "secrets.token.files.signing\\.pem="
	base := annotations("--set", "secrets.upload.value=0123456789abcdef", "--set", token+"KEY1")
	for _, tt := range []struct {
		name    string
		args    []string
		changed string
	}{
		{"config", []string{"--set", "secrets.upload.value=0123456789abcdef", "--set", token + "KEY1", "--set", "config.log.level=debug"}, "checksum/config"},
		{"upload secret", []string{"--set", "secrets.upload.value=fedcba9876543210", "--set", token + "KEY1"}, "checksum/secrets"},
		{"token key", []string{"--set", "secrets.upload.value=0123456789abcdef", "--set", token + "KEY2"}, "checksum/secrets"},
	} {
		got := annotations(tt.args...)
		for _, k := range []string{"checksum/config", "checksum/secrets"} {
			if same := got[k] == base[k]; same == (k == tt.changed) {
				t.Errorf("%s changed: %s went from %s to %s", tt.name, k, base[k], got[k])
			}
		}
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
