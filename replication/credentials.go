package replication

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// credentials reads a username and a password from two files and re-reads
// them when either file changes (size or modification time), checking at
// most once per second.
type credentials struct {
	userFile, passFile string
	now                func() time.Time

	mu        sync.Mutex
	checked   time.Time
	userStat  fileStamp
	passStat  fileStamp
	user      string
	pass      string
	gen       uint64 // incremented each time the credentials change
	loadError error
}

// fileStamp is what tells that a file changed.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// newCredentials returns nil when neither file is set. It reads both files
// once, so that a missing file is an error at start-up.
func newCredentials(userFile, passFile string, now func() time.Time) (*credentials, error) {
	if userFile == "" && passFile == "" {
		return nil, nil
	}
	if userFile == "" || passFile == "" {
		return nil, fmt.Errorf("usernameFile and passwordFile must be set together")
	}
	c := &credentials{userFile: userFile, passFile: passFile, now: now}
	if _, _, _, err := c.get(); err != nil {
		return nil, err
	}
	return c, nil
}

// get returns the current username and password and their generation,
// which changes whenever they do. When a file cannot be read after it was
// read once, the last good credentials are kept.
func (c *credentials) get() (user, pass string, gen uint64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.checked.IsZero() && now.Sub(c.checked) < time.Second && now.Sub(c.checked) >= 0 {
		return c.user, c.pass, c.gen, c.loadError
	}
	c.checked = now
	us, uerr := stamp(c.userFile)
	ps, perr := stamp(c.passFile)
	if err := firstError(uerr, perr); err != nil {
		if c.gen == 0 {
			c.loadError = err
		}
		return c.user, c.pass, c.gen, c.loadError
	}
	if c.gen != 0 && us == c.userStat && ps == c.passStat {
		return c.user, c.pass, c.gen, nil
	}
	u, uerr := os.ReadFile(c.userFile)
	p, perr := os.ReadFile(c.passFile)
	if err := firstError(uerr, perr); err != nil {
		if c.gen == 0 {
			c.loadError = fmt.Errorf("read credentials: %w", err)
		}
		return c.user, c.pass, c.gen, c.loadError
	}
	c.userStat, c.passStat = us, ps
	nu, np := strings.TrimSpace(string(u)), strings.TrimSpace(string(p))
	if c.gen == 0 || nu != c.user || np != c.pass {
		c.user, c.pass = nu, np
		c.gen++
	}
	c.loadError = nil
	return c.user, c.pass, c.gen, nil
}

func stamp(name string) (fileStamp, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}, fmt.Errorf("read credentials: %w", err)
	}
	return fileStamp{size: fi.Size(), modTime: fi.ModTime()}, nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
