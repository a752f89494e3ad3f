package audit

import (
	"fmt"
	"io"
	"os"
)

// Open returns the writer for an audit destination as configured
// (auth.audit.file): "stdout", "stderr", or a file path opened for
// appending (mode 0600). Close the returned closer at shutdown; for
// stdout and stderr it does nothing. It returns nil writer for "".
func Open(dest string, stdout, stderr io.Writer) (io.Writer, func() error, error) {
	nop := func() error { return nil }
	switch dest {
	case "":
		return nil, nop, nil
	case "stdout":
		return stdout, nop, nil
	case "stderr":
		return stderr, nop, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nop, fmt.Errorf("open audit log: %w", err)
	}
	return f, f.Close, nil
}
