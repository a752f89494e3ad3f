package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test.
const chartDir = ".."

// helm returns the helm binary: the pinned one scripts/install-tools.sh
// installs, else the one on PATH.
func helm(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PORTCULLIS_TOOLS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "portcullis-tools")
	}
	if p := filepath.Join(dir, "bin", "helm"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("helm")
	if err != nil {
		t.Fatal("helm is required and missing: run scripts/install-tools.sh")
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// rendering is one values file's manifests, decoded strictly into the
// Kubernetes types.
type rendering struct {
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	services        []corev1.Service
	serviceAccounts []corev1.ServiceAccount
	deployments     []appsv1.Deployment
	statefulSets    []appsv1.StatefulSet
	pdbs            []policyv1.PodDisruptionBudget
	hpas            []autoscalingv2.HorizontalPodAutoscaler
	ingresses       []networkingv1.Ingress
	networkPolicies []networkingv1.NetworkPolicy
	serviceMonitors []monitoringv1.ServiceMonitor
}

// decodeStrict decodes one YAML document into out, refusing unknown and
// duplicate fields.
func decodeStrict[T any](t *testing.T, doc []byte, list *[]T) {
	t.Helper()
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	*list = append(*list, v)
}

func render(t *testing.T, args ...string) rendering {
	t.Helper()
	cmd := exec.Command(helm(t), append([]string{"template", "reg", chartDir, "--namespace", "registry"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr.String())
	}
	var r rendering
	for _, doc := range bytes.Split(stdout.Bytes(), []byte("\n---\n")) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		switch meta.APIVersion + " " + meta.Kind {
		case " ":
			// a comment or an empty document
		case "v1 ConfigMap":
			decodeStrict(t, doc, &r.configMaps)
		case "v1 Secret":
			decodeStrict(t, doc, &r.secrets)
		case "v1 Service":
			decodeStrict(t, doc, &r.services)
		case "v1 ServiceAccount":
			decodeStrict(t, doc, &r.serviceAccounts)
		case "apps/v1 Deployment":
			decodeStrict(t, doc, &r.deployments)
		case "apps/v1 StatefulSet":
			decodeStrict(t, doc, &r.statefulSets)
		case "policy/v1 PodDisruptionBudget":
			decodeStrict(t, doc, &r.pdbs)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			decodeStrict(t, doc, &r.hpas)
		case "networking.k8s.io/v1 Ingress":
			decodeStrict(t, doc, &r.ingresses)
		case "networking.k8s.io/v1 NetworkPolicy":
			decodeStrict(t, doc, &r.networkPolicies)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			decodeStrict(t, doc, &r.serviceMonitors)
		default:
			t.Fatalf("unexpected object %s %s:\n%s", meta.APIVersion, meta.Kind, doc)
		}
	}
	return r
}

// pod returns the one workload's pod template and replicas.
func (r rendering) pod(t *testing.T) (corev1.PodTemplateSpec, string) {
	t.Helper()
	switch {
	case len(r.deployments) == 1 && len(r.statefulSets) == 0:
		return r.deployments[0].Spec.Template, "Deployment"
	case len(r.statefulSets) == 1 && len(r.deployments) == 0:
		// The claim templates are the pod's volumes too.
		pod := *r.statefulSets[0].Spec.Template.DeepCopy()
		for _, c := range r.statefulSets[0].Spec.VolumeClaimTemplates {
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: c.Name,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name}}})
		}
		return pod, "StatefulSet"
	}
	t.Fatalf("want one Deployment or one StatefulSet, got %d and %d", len(r.deployments), len(r.statefulSets))
	return corev1.PodTemplateSpec{}, ""
}

// config returns the registry configuration the ConfigMap carries.
func (r rendering) config(t *testing.T) map[string]any {
	t.Helper()
	if len(r.configMaps) != 1 {
		t.Fatalf("want one ConfigMap, got %d", len(r.configMaps))
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(r.configMaps[0].Data["config.yml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// filePaths returns every value of a key ending in File or Files (or of a
// trust store's files), with its key path.
func filePaths(v any, at string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			key := at + "." + k
			switch {
			case strings.HasSuffix(k, "File") || k == "file":
				if s, _ := x.(string); s != "" {
					out[key] = s
				}
			case strings.HasSuffix(k, "Files") || k == "files":
				for i, s := range x.([]any) {
					out[fmt.Sprintf("%s[%d]", key, i)] = s.(string)
				}
			default:
				filePaths(x, key, out)
			}
		}
	case []any:
		for i, x := range v {
			filePaths(x, fmt.Sprintf("%s[%d]", at, i), out)
		}
	}
}

func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("ci values files: %v, %v", files, err)
	}
	return files
}

// TestRenderedObjects renders the chart with its defaults and with each
// values file under ci/, decodes every object strictly into its Kubernetes
// type, and checks what a production deployment relies on.
func TestRenderedObjects(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{"defaults": nil}
	for _, f := range valuesFiles(t) {
		cases[strings.TrimSuffix(filepath.Base(f), "-values.yaml")] = []string{"-f", f}
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := render(t, args...)
			pod, kind := r.pod(t)
			cfg := r.config(t)
			storage, _ := cfg["storage"].(map[string]any)
			_, onS3 := storage["s3"]
			if wantKind := map[bool]string{true: "Deployment", false: "StatefulSet"}[onS3]; kind != wantKind {
				t.Errorf("storage on S3 %v: a %s, want a %s", onS3, kind, wantKind)
			}
			if kind == "StatefulSet" && *r.statefulSets[0].Spec.Replicas != 1 {
				t.Errorf("StatefulSet with %d replicas", *r.statefulSets[0].Spec.Replicas)
			}
			checkPodSecurity(t, pod)
			checkProbes(t, pod)
			checkMounts(t, r, pod, cfg)
			if got := pod.Annotations["checksum/config"]; len(got) != 64 {
				t.Errorf("checksum/config annotation %q", got)
			}
			if got := pod.Annotations["checksum/secrets"]; len(got) != 64 {
				t.Errorf("checksum/secrets annotation %q", got)
			}
			if len(r.serviceAccounts) != 1 || r.serviceAccounts[0].AutomountServiceAccountToken == nil || *r.serviceAccounts[0].AutomountServiceAccountToken {
				t.Errorf("the ServiceAccount must not mount a token: %+v", r.serviceAccounts)
			}
			if len(r.pdbs) != 1 {
				t.Errorf("%d PodDisruptionBudgets, want 1", len(r.pdbs))
			}
			for _, s := range r.services {
				if diff := cmp.Diff(pod.Labels, s.Spec.Selector, cmpSubset()); diff != "" && len(s.Spec.Selector) > 0 {
					t.Errorf("Service %s selects other pods (-pod +selector):\n%s", s.Name, diff)
				}
			}
			for _, h := range r.hpas {
				if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != r.deployments[0].Name {
					t.Errorf("the HPA scales %+v", h.Spec.ScaleTargetRef)
				}
				if r.deployments[0].Spec.Replicas != nil {
					t.Error("with an HPA the Deployment must leave replicas to it")
				}
			}
			for _, ing := range r.ingresses {
				if ing.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"] != "0" {
					t.Errorf("Ingress %s bounds the body size: %v", ing.Name, ing.Annotations)
				}
			}
		})
	}
}

// cmpSubset ignores pod labels the selector does not name.
func cmpSubset() cmp.Option {
	return cmp.FilterPath(func(p cmp.Path) bool {
		mi, ok := p.Last().(cmp.MapIndex)
		if !ok {
			return false
		}
		_, y := mi.Values()
		return !y.IsValid()
	}, cmp.Ignore())
}

// checkPodSecurity checks the restricted Pod Security Standard.
func checkPodSecurity(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	spec := pod.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", psc)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("the pod shares a host namespace")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
		(sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container security context %+v", sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounted[m.MountPath] = true
	}
	for _, dir := range []string{"/tmp", "/var/lib/portcullis"} {
		if !mounted[dir] {
			t.Errorf("%s is not a volume: the root filesystem is read-only", dir)
		}
	}
}

// checkProbes checks the three probes and the termination grace.
func checkProbes(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	c := pod.Spec.Containers[0]
	for name, tt := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"startup": {c.StartupProbe, "/healthz"}, "liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		if tt.p == nil || tt.p.HTTPGet == nil || tt.p.HTTPGet.Path != tt.path || tt.p.HTTPGet.Port.String() != "registry" {
			t.Errorf("%s probe %+v, want GET %s on the registry port", name, tt.p, tt.path)
			continue
		}
		if tt.p.TimeoutSeconds < 1 || tt.p.PeriodSeconds < 1 || tt.p.FailureThreshold < 1 {
			t.Errorf("%s probe timings %+v", name, tt.p)
		}
	}
	// Endpoints drop the pod while it sleeps, then SIGTERM gives
	// requests in flight the shutdown grace.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds < 1 {
		t.Fatalf("no preStop sleep: %+v", c.Lifecycle)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g <= 30+c.Lifecycle.PreStop.Sleep.Seconds {
		t.Errorf("terminationGracePeriodSeconds %v, want above the preStop sleep and the 30s shutdown grace", g)
	}
}

// checkMounts checks that every file the configuration names is inside a
// mounted volume, and, for a Secret the chart makes, that the Secret holds
// it.
func checkMounts(t *testing.T, r rendering, pod corev1.PodTemplateSpec, cfg map[string]any) {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	secrets := map[string]corev1.Secret{}
	for _, s := range r.secrets {
		secrets[s.Name] = s
	}
	mounts := pod.Spec.Containers[0].VolumeMounts
	for _, m := range mounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("mount %s: no volume %s", m.MountPath, m.Name)
			continue
		}
		if v.Secret != nil && strings.HasPrefix(v.Secret.SecretName, "reg-portcullis-") {
			if _, ok := secrets[v.Secret.SecretName]; !ok {
				t.Errorf("volume %s: the chart did not make Secret %s", v.Name, v.Secret.SecretName)
			}
		}
	}
	files := map[string]string{}
	filePaths(cfg, "", files)
	for key, file := range files {
		var found bool
		for _, m := range mounts {
			rel, ok := strings.CutPrefix(file, m.MountPath+"/")
			if m.SubPath != "" || !ok {
				continue
			}
			found = true
			v := volumes[m.Name]
			if v.Secret == nil {
				continue
			}
			name := path.Base(rel)
			if len(v.Secret.Items) > 0 {
				var keyOf string
				for _, it := range v.Secret.Items {
					if it.Path == name {
						keyOf = it.Key
					}
				}
				if keyOf == "" {
					t.Errorf("%s: %s is not among the items of Secret %s", key, file, v.Secret.SecretName)
				}
				name = keyOf
			}
			if s, made := secrets[v.Secret.SecretName]; made {
				if _, ok := s.Data[name]; !ok {
					t.Errorf("%s: Secret %s has no key %s", key, s.Name, name)
				}
			}
		}
		if !found {
			t.Errorf("%s: %s is in no mounted volume", key, file)
		}
	}
}
