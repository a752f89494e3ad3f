package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDiff(t *testing.T) {
	t.Parallel()
	base := func() *Config {
		c := Default()
		c.Cache = []Cache{{Prefix: "hub", Remote: "docker"}}
		return c
	}
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{name: "same", change: func(*Config) {}},
		{name: "leaf", change: func(c *Config) { c.HTTP.Addr = ":6000" }, want: []string{"http.addr"}},
		{name: "several", change: func(c *Config) {
			c.DataDir = "/other"
			c.Auth.Rules = []AccessRule{{Subjects: []string{"anonymous"}}}
			c.HTTP.TLS.CertFile = "c.pem"
		}, want: []string{"dataDir", "http.tls.certFile", "auth.rules"}},
		{name: "list element", change: func(c *Config) { c.Cache[0].Prefix = "mirror" }, want: []string{"cache[0].prefix"}},
		{name: "section set", change: func(c *Config) { c.Storage.S3 = &S3{Bucket: "b"} }, want: []string{"storage.s3"}},
		{name: "pointer value", change: func(c *Config) {
			d := Duration(time.Hour)
			c.GC.Interval = &d
		}, want: []string{"gc.interval"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := base(), base()
			tc.change(b)
			if diff := cmp.Diff(tc.want, Diff(a, b)); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
}
