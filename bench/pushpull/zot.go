package main

import (
	"encoding/json"
	"net"
)

// zotConfig is the configuration of zot on addr with its defaults (dedupe
// and garbage collection on, as zot ships), storing in dir or, when b is not
// nil, in b through its s3 driver with dir for its local state. On S3,
// dedupe is off: with it on, zot needs a cache database beside the bucket.
func zotConfig(addr, dir string, b *bucket) string {
	host, port, _ := net.SplitHostPort(addr)
	storage := map[string]any{"rootDirectory": dir}
	if b != nil {
		storage["dedupe"] = false
		storage["storageDriver"] = map[string]any{
			"name":           "s3",
			"rootdirectory":  "/",
			"region":         "us-east-1",
			"regionendpoint": b.endpoint,
			"bucket":         b.name,
			"accesskey":      b.accessKey,
			"secretkey":      b.secretKey,
			"secure":         false,
			"forcepathstyle": true,
			"skipverify":     false,
		}
	}
	cfg := map[string]any{
		"distSpecVersion": "1.1.1",
		"storage":         storage,
		"http":            map[string]any{"address": host, "port": port},
		"log":             map[string]any{"level": "error"},
	}
	out, _ := json.MarshalIndent(cfg, "", "  ") // maps of strings and bools
	return string(out)
}
