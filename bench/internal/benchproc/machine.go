package benchproc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUBusy is a reading of the machine's CPU time, all CPUs together, from
// /proc/stat: busy is what is not idle or waiting for I/O.
type CPUBusy struct{ busy, total int64 }

// ReadCPUBusy reads the machine's CPU time so far.
func ReadCPUBusy() (CPUBusy, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUBusy{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return CPUBusy{}, errors.New("malformed /proc/stat")
	}
	var c CPUBusy
	for i, s := range f[1:] {
		if i >= 8 {
			break // guest times, counted in user and nice already
		}
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return CPUBusy{}, fmt.Errorf("parse /proc/stat: %w", err)
		}
		c.total += t
		if i != 3 && i != 4 { // idle, iowait
			c.busy += t
		}
	}
	return c, nil
}

// Since returns the fraction of the machine's CPU time that was busy
// between from and c (0 to 1; NaN when no time passed).
func (c CPUBusy) Since(from CPUBusy) float64 {
	return float64(c.busy-from.busy) / float64(c.total-from.total)
}
