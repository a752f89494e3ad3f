package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestExampleConfigIsValidAndMatchesDefaults(t *testing.T) {
	c, err := LoadFile("../config.example.yml")
	if err != nil {
		t.Fatalf("config.example.yml: %v", err)
	}
	if diff := cmp.Diff(Default(), c, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("config.example.yml differs from Default() (-default +example):\n%s", diff)
	}
}

func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../config.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Each leaf key needs a comment above it, or a documented sibling
	// directly above it (certFile/keyFile share one comment). Section
	// headers need none.
	prevDocumented, prevIndent := false, -1
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case trimmed == "":
			prevDocumented, prevIndent = false, -1
		case strings.HasPrefix(trimmed, "#"):
			prevDocumented, prevIndent = true, -1
		case strings.HasSuffix(trimmed, ":"):
			prevDocumented, prevIndent = false, -1
		default:
			if !prevDocumented && !(prevIndent == indent && i > 0) {
				t.Errorf("line %d %q: no comment above it", i+1, trimmed)
			}
			prevDocumented = prevDocumented || prevIndent == indent
			prevIndent = indent
		}
	}
}

// TestExampleS3Block uncomments the documented s3 block and loads it.
func TestExampleS3Block(t *testing.T) {
	data, err := os.ReadFile("../config.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	inBlock := false
	for _, line := range strings.Split(string(data), "\n") {
		rest, commented := strings.CutPrefix(line, "  #")
		switch {
		case commented && strings.HasPrefix(rest, "s3:"):
			inBlock = true
			line = "  " + rest
		case inBlock && commented && strings.HasPrefix(rest, "  "):
			line = "  " + rest
		default:
			inBlock = false
		}
		out = append(out, line)
	}
	c, err := Load(strings.NewReader(strings.Join(out, "\n")))
	if err != nil {
		t.Fatalf("example with s3: %v", err)
	}
	want := &S3{Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", Bucket: "registry",
		AccessKeyFile: "/run/secrets/s3-access-key", SecretKeyFile: "/run/secrets/s3-secret-key",
		PartSize: 16 << 20, Concurrency: 4}
	if diff := cmp.Diff(want, c.Storage.S3); diff != "" {
		t.Errorf("s3 (-want +got):\n%s", diff)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"0": 0, "1048576": 1 << 20, "512KiB": 512 << 10, "16MiB": 16 << 20, "2 GiB": 2 << 30, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "16MB", "x", "99999999999GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    func(*Config)
		wantErr []string
	}{
		{name: "minimal", yaml: "version: 1\n", want: func(*Config) {}},
		{
			name: "overrides",
			yaml: "version: 1\nhttp:\n  addr: 0.0.0.0:443\n  shutdownGrace: 5s\nlog:\n  format: text\n",
			want: func(c *Config) {
				c.HTTP.Addr = "0.0.0.0:443"
				c.HTTP.ShutdownGrace = Duration(5 * time.Second)
				c.Log.Format = "text"
			},
		},
		{name: "empty", yaml: "", wantErr: []string{"config is empty"}},
		{name: "unknown key", yaml: "version: 1\nhttp:\n  adr: x\n", wantErr: []string{"http.adr: unknown key (did you mean addr?)"}},
		{name: "bad duration", yaml: "version: 1\nhttp:\n  shutdownGrace: soon\n", wantErr: []string{"is not a duration (e.g. 30s"}},
		{name: "duration not a string", yaml: "version: 1\nhttp:\n  shutdownGrace: [1]\n", wantErr: []string{"want a duration such as 30s"}},
		{
			name: "every problem at once",
			yaml: "version: 2\nhttp:\n  addr: nope\n  host: example.com\n  tls:\n    certFile: a.pem\nlog:\n  level: loud\n  format: xml\nvalidation:\n  foreignLayerURLs: ['(']\ncatalog:\n  maxEntries: -1\n",
			wantErr: []string{
				"version: must be 1, got 2",
				"http.addr: must be host:port",
				"http.host: must be an absolute http or https URL",
				"http.tls: certFile and keyFile must be set together",
				"log.level: must be debug, info, warn or error",
				"log.format: must be json or text",
				"validation.foreignLayerURLs[0]: invalid regular expression",
				"catalog.maxEntries: must be positive",
			},
		},
		{
			name: "s3 problems",
			yaml: "version: 1\nstorage:\n  filesystem:\n    rootDirectory: /x\n  s3:\n    endpoint: ftp://h/path\n    accessKeyFile: a\n    partSize: 1MiB\n",
			wantErr: []string{
				"storage.s3.endpoint: must be an http:// or https:// URL",
				"storage.s3.bucket: required",
				"storage.s3: accessKeyFile and secretKeyFile must be set together",
				"storage.s3.partSize: must be between 5MiB and 5GiB",
				"storage: set either filesystem or s3, not both",
			},
		},
		{name: "s3 endpoint with credentials", yaml: "version: 1\nstorage:\n  s3:\n    endpoint: http://k:s@h:9000\n    bucket: b\n", wantErr: []string{"must not carry credentials"}},
		{name: "bad size", yaml: "version: 1\nstorage:\n  s3:\n    endpoint: http://h\n    bucket: b\n    partSize: lots\n", wantErr: []string{"invalid size"}},
		{
			name: "policy patterns and modes, every problem at once",
			yaml: "version: 1\nscan:\n  policies:\n    - repositories: ['a//b', team/**]\n      mode: block\n" +
				"trust:\n  policies:\n    - repositories: ['x/**y']\n      mode: Enforce\n      signers: [nobody]\n" +
				"admission:\n  webhooks:\n    - name: w\n      url: https://h/review\n      repositories: ['[', '']\n",
			wantErr: []string{
				`scan.policies[0].mode: must be enforce, quarantine or audit, got "block"`,
				`scan.policies[0].repositories[0]: invalid pattern "a//b": empty path segment`,
				`trust.policies[0].repositories[0]: invalid pattern "x/**y": ** must be a whole path segment`,
				`trust.policies[0].mode: must be enforce, quarantine or audit, got "Enforce"`,
				`trust.policies[0].signers[0]: unknown signer "nobody"`,
				`admission.webhooks[0].repositories[0]: invalid pattern "[": syntax error in pattern`,
				`admission.webhooks[0].repositories[1]: empty pattern`,
			},
		},
		{
			name: "webhook client certificate and key",
			yaml: "version: 1\nadmission:\n  webhooks:\n    - name: a\n      url: https://h/review\n      certFile: c.pem\n" +
				"    - name: b\n      url: https://h/review\n      keyFile: k.pem\n" +
				"    - name: c\n      url: http://h/review\n      certFile: c.pem\n      keyFile: k.pem\n",
			wantErr: []string{
				"admission.webhooks[0]: certFile and keyFile must be set together",
				"admission.webhooks[1]: certFile and keyFile must be set together",
				"admission.webhooks[2].certFile: a client certificate needs an https:// url",
			},
		},
		{name: "negative duration", yaml: "version: 1\nhttp:\n  idleTimeout: -1s\n", wantErr: []string{"http.idleTimeout: must not be negative"}},
		{name: "metrics address not host:port", yaml: "version: 1\nhttp:\n  metricsAddr: metrics\n", wantErr: []string{"http.metricsAddr: must be host:port"}},
		{name: "metrics address is the registry's", yaml: "version: 1\nhttp:\n  addr: 127.0.0.1:5000\n  metricsAddr: 127.0.0.1:5000\n", wantErr: []string{"http.metricsAddr: is http.addr"}},
		{
			name: "replication rules, every problem at once",
			yaml: "version: 1\nremotes:\n  - name: b\n    url: https://b.example\nreplication:\n  concurrency: -1\n  rules:\n" +
				"    - name: r\n      mode: push\n      remote: c\n      repositories: ['a//b']\n      tags: ['[']\n" +
				"    - name: r\n      mode: pull\n      remote: b\n      repositories: [prod/**]\n      trigger: event\n" +
				"    - mode: mirror\n      remote: b\n      trigger: often\n",
			wantErr: []string{
				"replication.concurrency: must be between 1 and 64",
				`replication.rules[0].remote: "c" is not the name of an entry of remotes`,
				`replication.rules[0].repositories[0]: invalid pattern "a//b"`,
				"replication.rules[0].tags[0]: ",
				`replication.rules[1].name: "r" is also the name of replication.rules[0]`,
				"replication.rules[1].trigger: a pull rule has no events",
				"replication.rules[2].name: required",
				`replication.rules[2].mode: must be push or pull, got "mirror"`,
				"replication.rules[2].repositories: must list at least one",
				`replication.rules[2].trigger: must be event, schedule or manual, got "often"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(strings.NewReader(tt.yaml))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Load succeeded, want errors %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(want)
			if diff := cmp.Diff(want, c); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDerivedPaths(t *testing.T) {
	c := Default()
	c.DataDir = "/srv/reg"
	if got := c.FilesystemRoot(); got != "/srv/reg" {
		t.Errorf("FilesystemRoot = %q", got)
	}
	if got := c.MetadataPath(); got != "/srv/reg/portcullis.db" {
		t.Errorf("MetadataPath = %q", got)
	}
	c.Storage.Filesystem.RootDirectory = "/mnt/blobs"
	if got := c.FilesystemRoot(); got != "/mnt/blobs" {
		t.Errorf("FilesystemRoot = %q", got)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("version: 1\n"))
	f.Add([]byte("version: 1\nhttp:\n  addr: 127.0.0.1:5000\n  shutdownGrace: 30s\n"))
	if b, err := os.ReadFile("../config.example.yml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Load(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		// Whatever loads must be valid and stable under Provision.
		if err := c.Validate(); err != nil {
			t.Fatalf("Load returned an invalid config: %v", err)
		}
		before := *c
		c.Provision()
		if diff := cmp.Diff(&before, c); diff != "" {
			t.Fatalf("Provision changed a loaded config: %s", diff)
		}
	})
}

// TestShapeProblemsAtOnce: every unknown key, value of the wrong kind and
// bad duration is listed in one run, each with its key path and line.
func TestShapeProblemsAtOnce(t *testing.T) {
	t.Parallel()
	_, err := Load(strings.NewReader(`version: 1
http:
  adress: 127.0.0.1:5000
  shutdownGrace: 30 seconds
log:
  accessLog: sometimes
auth:
  users:
    - name: alice
      pasword: x
storag: {}
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"http.adress: unknown key (did you mean addr?) (line 3)",
		`http.shutdownGrace: "30 seconds" is not a duration (e.g. 30s, 5m, 24h) (line 4)`,
		`log.accessLog: "sometimes" is not a boolean (true or false) (line 6)`,
		"auth.users[0].pasword: unknown key (did you mean passwordFile?) (line 10)",
		"storag: unknown key (did you mean storage?) (line 11)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
