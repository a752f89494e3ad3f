package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/app"
)

func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file (default: built-in defaults)")
	addr := fs.String("addr", "", "listen address HOST:PORT, overrides http.addr")
	data := fs.String("data", "", "data directory, overrides dataDir")
	tokenOnly := fs.Bool("token-only", false, "serve only the token service (auth must be enabled)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	// The same file and overrides at start and at each reload.
	load := func() (*config.Config, error) {
		cfg := config.Default()
		if *file != "" {
			var err error
			if cfg, err = config.LoadFile(*file); err != nil {
				return nil, err
			}
		}
		if *addr != "" {
			cfg.HTTP.Addr = *addr
		}
		if *data != "" {
			cfg.DataDir = *data
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	// SIGHUP reloads; caught from the start, so that one sent while the
	// registry starts does not end it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := load()
	if err != nil {
		return err
	}
	// Tracing is opt-in: nothing is exported unless the operator asks.
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		_ = os.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	// Log lines go out in batches (one write per batch, not per request's
	// access line), every line written before serve returns.
	logs := app.NewLogBuffer(stderr)
	defer logs.Close() //nolint:errcheck // stderr failing: nowhere to report it
	log, err := app.NewLogger(cfg.Log, logs)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, log, app.Options{TokenOnly: *tokenOnly, Load: load, Version: version, ConfigFile: *file})
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				// Reload logs its result, and a refusal keeps the
				// running configuration: nothing more to do here.
				_ = a.Reload(ctx)
			}
		}
	}()
	ln, err := a.Listen(ctx)
	if err != nil {
		return errors.Join(err, a.Close())
	}
	err = a.Serve(ctx, ln)
	return errors.Join(err, a.Close())
}

func validateConfig(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	skipFiles := fs.Bool("skip-files", false, "check the configuration alone, not the files it names")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return usageError{"config validate: expected [--skip-files] FILE"}
	}
	file := fs.Arg(0)
	cfg, err := config.LoadFile(file)
	if err != nil {
		return err
	}
	// The files the configuration names, read as serve would read them;
	// --skip-files for a configuration made for another machine.
	if !*skipFiles {
		if err := app.CheckFiles(cfg); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	fmt.Fprintf(stdout, "%s: valid\n", file)
	return nil
}
