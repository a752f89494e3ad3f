package app

import (
	"crypto/rand"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis/portcullis/config"
)

// pushBenchRegistry starts the whole registry with its defaults on the
// filesystem, logging as serve does (JSON, access log on) to io.Discard,
// and returns it with its host:port.
func pushBenchRegistry(b *testing.B) (*App, string) {
	b.Helper()
	cfg := config.Default()
	log, err := NewLogger(cfg.Log, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Log.AccessLog = new(bool)
	*cfg.Log.AccessLog = true
	return servedApp(b, cfg, log)
}

// BenchmarkSmallPush pushes small images (a 4 KiB layer and a config),
// each to its own repository, by 8 pushers at once, to the whole registry
// with its defaults on the filesystem, logging as serve does. One op is one
// image. Client and registry share the process: profile with
// -cpuprofile and focus on net/http.serverHandler.ServeHTTP for the
// registry's part.
func BenchmarkSmallPush(b *testing.B) {
	_, host := pushBenchRegistry(b)
	var err error
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

// BenchmarkBigPush pushes big images (4 layers of 64 MiB random bytes,
// pushed in parallel as go-containerregistry does: POST, one PATCH with
// the whole layer, PUT ?digest=), each to its own repository, one after
// another, to the whole registry with its defaults on the filesystem. One
// op is one image. Profile as BenchmarkSmallPush.
func BenchmarkBigPush(b *testing.B) {
	_, host := pushBenchRegistry(b)
	b.SetBytes(4 << 26)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		img := bigImage(b, 4, 64<<20)
		ref, err := name.ParseReference(fmt.Sprintf("%s/bench/big%d:v1", host, i), name.Insecure)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := remote.Write(ref, img); err != nil {
			b.Fatal(err)
		}
	}
}

// bigImage is an OCI image of layers uncompressed layers of size random
// bytes, every digest computed before it is pushed.
func bigImage(tb testing.TB, layers, size int) v1.Image {
	tb.Helper()
	ls := make([]v1.Layer, layers)
	for i := range ls {
		p := make([]byte, size)
		_, _ = rand.Read(p) // never fails on Linux
		ls[i] = static.NewLayer(p, types.OCIUncompressedLayer)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), ls...)
	if err != nil {
		tb.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if _, err := img.Digest(); err != nil {
		tb.Fatal(err)
	}
	return img
}
