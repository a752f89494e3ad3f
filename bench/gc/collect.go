package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/portcullis/portcullis/internal/gc"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Which collector a run measures.
const (
	ours     = "portcullis"
	upstream = "distribution"
)

// collection is what one collector run did and cost.
type collection struct {
	wall  time.Duration // the process, start to exit
	mark  time.Duration
	sweep time.Duration
	// deletes counts manifests and blobs deleted (not links or tags).
	deletes int
	peakRSS int64         // bytes, the child's ru_maxrss
	cpu     time.Duration // the child's user + system time
	// minioCPU is the CPU time MinIO used during the run (S3 only): the
	// work the collector asked of the object store.
	minioCPU time.Duration
	// left is what the store held afterwards.
	blobsLeft, manifestsLeft int
	// missing are live blobs that are gone (lost data); extra are
	// garbage blobs that are still there.
	missing, extra int
}

func (c collection) deletesPerSecond() float64 {
	if c.sweep <= 0 {
		return 0
	}
	return float64(c.deletes) / c.sweep.Seconds()
}

// report is what `registry gc --json` prints.
type report = gc.Report

// oursConfig is the configuration `registry gc` reads: st's storage, no
// background collector, nothing protected by age (the dataset was written
// a moment ago), untagged manifests deleted as distribution's
// --delete-untagged does.
func oursConfig(st store, dataDir string) string {
	return "version: 1\n" +
		"dataDir: " + dataDir + "\n" +
		"storage:\n" + st.oursStorage() +
		"gc:\n" +
		"  interval: 0s\n" +
		"  grace: 0s\n" +
		"  deleteUntagged: true\n"
}

// upstreamConfig is distribution's configuration for st.
func upstreamConfig(st store) string {
	return "version: 0.1\n" +
		"log:\n" +
		"  level: error\n" +
		"storage:\n" + st.upstreamStorage() +
		"  delete:\n" +
		"    enabled: true\n"
}

// runOurs runs `registry gc --config FILE --json` of bin on st; its config
// and stderr go to files named after name in work.
func runOurs(ctx context.Context, bin string, st store, work, name string) (collection, report, error) {
	cfg := filepath.Join(work, name+".yml")
	if err := os.WriteFile(cfg, []byte(oursConfig(st, filepath.Join(work, name+"-data"))), 0o600); err != nil {
		return collection{}, report{}, err
	}
	var stdout bytes.Buffer
	c, err := runChild(ctx, exec.Command(bin, "gc", "--config", cfg, "--json"), st.env(), &stdout, filepath.Join(work, name+".log"))
	if err != nil {
		return c, report{}, err
	}
	var r report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return c, r, fmt.Errorf("registry gc --json: %w: %.500q", err, stdout.String())
	}
	if r.Error != "" {
		return c, r, fmt.Errorf("registry gc reported: %s", r.Error)
	}
	c.mark = seconds(r.MarkSeconds)
	c.sweep = seconds(r.SweepSeconds)
	c.deletes = r.Manifests.Deleted + r.Blobs.Deleted
	return c, r, nil
}

// distribution's summary line, printed after the manifests were deleted and
// before the blobs are (registry/storage/garbagecollect.go MarkAndSweep).
var upstreamSummary = regexp.MustCompile(`^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion`)

// runUpstream runs `garbage-collect --delete-untagged CONFIG` of bin on st.
// distribution reports no phases: its mark ends at the first line that
// names a manifest eligible for deletion (or at its summary line, when
// there is none), which it prints once the mark is over; the rest is the
// sweep. The counts come from the summary line. Its output goes to a file
// named after name in work.
func runUpstream(ctx context.Context, bin string, st store, work, name string) (collection, error) {
	cfg := filepath.Join(work, name+".yml")
	if err := os.WriteFile(cfg, []byte(upstreamConfig(st)), 0o600); err != nil {
		return collection{}, err
	}
	out, err := os.Create(filepath.Join(work, name+".out"))
	if err != nil {
		return collection{}, err
	}
	defer out.Close()
	pr, pw := io.Pipe()
	type parsed struct {
		markEnd          time.Time
		blobs, manifests int
		summary          bool
		err              error
	}
	done := make(chan parsed, 1)
	go func() {
		var p parsed
		w := bufio.NewWriter(out)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if p.markEnd.IsZero() && (strings.HasPrefix(line, "manifest eligible for deletion: ") || upstreamSummary.MatchString(line)) {
				p.markEnd = time.Now()
			}
			if m := upstreamSummary.FindStringSubmatch(line); m != nil {
				p.blobs, _ = strconv.Atoi(m[2])
				p.manifests, _ = strconv.Atoi(m[3])
				p.summary = true
			}
			_, _ = w.WriteString(line + "\n")
		}
		p.err = sc.Err()
		_, _ = io.Copy(io.Discard, pr) // keep the child from blocking on a line too long
		if err := w.Flush(); p.err == nil {
			p.err = err
		}
		done <- p
	}()
	cmd := exec.Command(bin, "garbage-collect", "--delete-untagged", cfg)
	start := time.Now()
	c, err := runChild(ctx, cmd, []string{"OTEL_TRACES_EXPORTER=none"}, pw, filepath.Join(work, name+".log"))
	pw.Close()
	p := <-done
	if err != nil {
		return c, err
	}
	if p.err != nil {
		return c, fmt.Errorf("read garbage-collect output: %w", p.err)
	}
	if !p.summary {
		return c, fmt.Errorf("garbage-collect printed no summary line (output: %s)", out.Name())
	}
	end := start.Add(c.wall)
	c.mark = p.markEnd.Sub(start)
	c.sweep = end.Sub(p.markEnd)
	c.deletes = p.blobs + p.manifests
	return c, nil
}

// runChild runs cmd to its end with env added to this process's, stdout to
// stdout and stderr to the file logPath, and returns its wall time and peak
// RSS. A non-zero exit is an error that quotes the end of the log.
func runChild(ctx context.Context, cmd *exec.Cmd, env []string, stdout io.Writer, logPath string) (collection, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return collection{}, err
	}
	defer logf.Close()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = stdout, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Not exec.CommandContext: on Ctrl-C the collector gets SIGTERM and
	// the chance to give its lease back.
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return collection{}, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
	err = cmd.Wait()
	stop()
	c := collection{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		c.peakRSS = ru.Maxrss << 10 // KiB on Linux
	}
	if err != nil {
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return c, fmt.Errorf("%s %s: %w\n%s", filepath.Base(cmd.Path), strings.Join(cmd.Args[1:2], ""), err, tail)
	}
	return c, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
