package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	dauth "github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/handlers"
	repositorymiddleware "github.com/distribution/distribution/v3/registry/middleware/repository"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/referrers"
)

// Names under which Portcullis registers with distribution's global registries.
const (
	driverName     = "portcullis"
	middlewareName = "portcullis"
)

// Option keys carried from our wiring to the registered functions.
const (
	optDriver    = "driver"
	optReferrers = "referrers"
	optLinks     = "links"
)

var registerOnce sync.Once
var registerErr error

// registerWithDistribution registers our storage driver factory and
// repository middleware with distribution, once per process. The registered
// functions hold no state: each App passes its own objects through the
// configuration's parameters.
func registerWithDistribution() error {
	registerOnce.Do(func() {
		factory.Register(driverName, preparedDriver{})
		registerErr = errors.Join(
			repositorymiddleware.Register(middlewareName, wrapRepository),
			dauth.Register(accessControllerName, preparedController),
		)
	})
	return registerErr
}

// preparedDriver hands distribution a driver we built ourselves, so the App
// and our own handlers share one driver instance.
type preparedDriver struct{}

func (preparedDriver) Create(_ context.Context, params map[string]any) (storagedriver.StorageDriver, error) {
	d, ok := params[optDriver].(storagedriver.StorageDriver)
	if !ok {
		return nil, errors.New("portcullis storage: no prepared driver in parameters")
	}
	return d, nil
}

func wrapRepository(_ context.Context, repo distribution.Repository, options map[string]any) (distribution.Repository, error) {
	idx, ok := options[optReferrers].(*referrers.Index)
	if !ok {
		return nil, errors.New("portcullis middleware: no referrers index in options")
	}
	links, ok := options[optLinks].(*digests.Links)
	if !ok {
		return nil, errors.New("portcullis middleware: no digest links in options")
	}
	return referrers.Wrap(digests.Wrap(repo, links), idx), nil
}

// defaultForeignLayerURLs allows any http or https URL on a non-distributable
// layer, as the OCI image spec's examples do.
var defaultForeignLayerURLs = []string{"^https?://"}

// distributionConfig builds distribution's configuration for our sections.
func distributionConfig(c *config.Config, driver storagedriver.StorageDriver, idx *referrers.Index, links *digests.Links, secret string) *configuration.Configuration {
	dc := &configuration.Configuration{}
	dc.Version = configuration.MajorMinorVersion(0, 1)
	dc.Storage = configuration.Storage{
		driverName: configuration.Parameters{optDriver: driver},
		"delete":   configuration.Parameters{"enabled": c.Storage.Delete.On(true)},
		"redirect": configuration.Parameters{"disable": c.Storage.S3 == nil || !c.Storage.S3.Redirect},
		// No blob descriptor cache: a replica must not answer from its
		// memory that a blob exists after garbage collection (or another
		// replica) deleted it.
		"maintenance": configuration.Parameters{
			// distribution requires exactly map[any]any here.
			"uploadpurging": map[any]any{
				"enabled":  c.Storage.UploadPurging.Enabled == nil || *c.Storage.UploadPurging.Enabled,
				"age":      c.Storage.UploadPurging.Age.D().String(),
				"interval": c.Storage.UploadPurging.Interval.D().String(),
				"dryrun":   false,
			},
		},
	}
	dc.HTTP.Secret = secret
	dc.HTTP.Host = c.HTTP.Host
	dc.HTTP.RelativeURLs = c.HTTP.RelativeURLs
	dc.Catalog.MaxEntries = c.Catalog.MaxEntries
	dc.Validation.Enabled = true
	dc.Validation.Manifests.URLs.Allow = append([]string(nil), c.Validation.ForeignLayerURLs...)
	if len(dc.Validation.Manifests.URLs.Allow) == 0 {
		dc.Validation.Manifests.URLs.Allow = append([]string(nil), defaultForeignLayerURLs...)
	}
	if c.Validation.AllowIncompleteIndexes {
		dc.Validation.Manifests.Indexes.Platforms = "none"
	} else {
		dc.Validation.Manifests.Indexes.Platforms = "all"
	}
	dc.Middleware = map[string][]configuration.Middleware{
		"repository": {{Name: middlewareName, Options: configuration.Parameters{optReferrers: idx, optLinks: links}}},
	}
	return dc
}

// newDistributionApp calls distribution's constructor, turning its panics
// into errors.
func newDistributionApp(ctx context.Context, dc *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("configure registry core: %v", p)
		}
	}()
	return handlers.NewApp(ctx, dc), nil
}
