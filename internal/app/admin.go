package app

import (
	"context"
	"errors"
	"fmt"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
)

// OpenRobots opens the robot accounts kept in the configured storage
// backend, for the robot commands.
func OpenRobots(ctx context.Context, cfg *config.Config) (*token.Robots, error) {
	if !cfg.Auth.Enabled {
		return nil, errors.New("auth is not enabled in this configuration")
	}
	if !cfg.Auth.Robots.On() {
		return nil, errors.New("auth.robots.enabled is false")
	}
	driver, err := newDriver(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return token.NewRobots(driver, token.RobotsOptions{Dir: cfg.Auth.Robots.Path, MaxLifetime: cfg.Auth.Robots.MaxLifetime.D()})
}

// OpenRefreshes opens the records of issued refresh tokens kept in the
// configured storage backend, for listing and revoking them.
func OpenRefreshes(ctx context.Context, cfg *config.Config) (*token.Refreshes, error) {
	if !cfg.Auth.Enabled {
		return nil, errors.New("auth is not enabled in this configuration")
	}
	driver, err := newDriver(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return token.NewRefreshes(driver, token.RefreshesOptions{})
}

// ExplainAccess explains the policy's decision for subject ("user:alice",
// "robot:ci", "anonymous") on scope ("repository:team/app:push"), and
// reports whether every action asked for is allowed.
func ExplainAccess(ctx context.Context, cfg *config.Config, subject, scope string) (string, bool, error) {
	if !cfg.Auth.Enabled {
		return "", false, errors.New("auth is not enabled in this configuration: everyone may do everything")
	}
	p, err := pauth.NewPolicy(cfg.Auth)
	if err != nil {
		return "", false, err
	}
	s, err := pauth.ParseSubject(subject)
	if err != nil {
		return "", false, fmt.Errorf("--subject: %w", err)
	}
	switch s.Kind {
	case pauth.User:
		s = p.User(s.Name)
	case pauth.Robot:
		robots, err := OpenRobots(ctx, cfg)
		if err != nil {
			return "", false, err
		}
		r, err := robots.Get(ctx, s.Name)
		if err != nil {
			return "", false, err
		}
		if s, err = r.Subject(); err != nil {
			return "", false, err
		}
	}
	return p.Explain(s, scope)
}
