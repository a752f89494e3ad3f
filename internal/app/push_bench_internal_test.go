package app

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/config"
)

// BenchmarkSmallPush pushes small images (a 4 KiB layer and a config),
// each to its own repository, by 8 pushers at once, to the whole registry
// with its defaults on the filesystem, logging as serve does. One op is one
// image. Client and registry share the process: profile with
// -cpuprofile and focus on net/http.serverHandler.ServeHTTP for the
// registry's part.
func BenchmarkSmallPush(b *testing.B) {
	cfg := config.Default()
	log, err := NewLogger(cfg.Log, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Log.AccessLog = new(bool)
	*cfg.Log.AccessLog = true
	_, host := servedApp(b, cfg, log)
	imgs := make([]v1.Image, b.N)
	for i := range imgs {
		if imgs[i], err = random.Image(4096, 1); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(imgs) {
					return
				}
				ref, err := name.ParseReference(fmt.Sprintf("%s/bench/app%d:v1", host, i), name.Insecure)
				if err == nil {
					err = remote.Write(ref, imgs[i])
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
