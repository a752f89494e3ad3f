package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/portcullis/portcullis/internal/app"
	"github.com/portcullis/portcullis/internal/gc"
)

// gcCmd: registry gc [--dry-run] [--json] [--config FILE] [--data DIR].
// It runs one garbage collection beside the serving replicas. Exit codes:
// 0 done, 1 failed or another collection is running, 2 usage.
func gcCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file (where the registry stores content, gc and retention)")
	data := fs.String("data", "", "data directory, overrides dataDir")
	dryRun := fs.Bool("dry-run", false, "print what would be deleted, and delete nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON, with every deletion")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("gc: unexpected argument %q", fs.Arg(0))}
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	log, err := app.NewLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	rep, err := app.Collect(ctx, cfg, log, *dryRun)
	var busy *gc.BusyError
	if errors.As(err, &busy) {
		return exitError{code: 1, err: err}
	}
	if rep == nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return jerr
		}
	} else {
		printReport(stdout, rep)
	}
	if err != nil {
		return exitError{code: 1, err: err}
	}
	return nil
}

func printReport(w io.Writer, rep *gc.Report) {
	verb := "deleted"
	if rep.DryRun {
		verb = "would delete"
	}
	for _, d := range rep.Deleted {
		switch d.Kind {
		case "tag":
			fmt.Fprintf(w, "%s tag      %s:%s (%s): %s\n", verb, d.Repository, d.Tag, d.Digest, d.Reason)
		case "manifest":
			fmt.Fprintf(w, "%s manifest %s@%s: %s\n", verb, d.Repository, d.Digest, d.Reason)
		case "blob":
			fmt.Fprintf(w, "%s blob     %s (%d bytes): %s\n", verb, d.Digest, d.Size, d.Reason)
		case "upload":
			fmt.Fprintf(w, "%s upload   %s %s: %s\n", verb, d.Repository, d.Upload, d.Reason)
		}
	}
	if rep.DeletedTruncated {
		fmt.Fprintf(w, "(list truncated at %d entries; the counts below are complete)\n", len(rep.Deleted))
	}
	fmt.Fprintf(w, "run %s: %d repositories; tags %d kept, %d %s; manifests %d kept, %d %s; blobs %d kept, %d %s, %d spared; uploads %d %s; %d bytes reclaimed; %.1fs (mark %.1fs, sweep %.1fs)\n",
		rep.ID, rep.Repositories, rep.Tags.Kept, rep.Tags.Deleted, verb, rep.Manifests.Kept, rep.Manifests.Deleted, verb,
		rep.Blobs.Kept, rep.Blobs.Deleted, verb, rep.Blobs.Spared+rep.Manifests.Spared, rep.Uploads.Deleted, verb,
		rep.BytesReclaimed, rep.DurationSeconds, rep.MarkSeconds, rep.SweepSeconds)
}
