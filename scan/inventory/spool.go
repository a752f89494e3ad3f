package inventory

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// spooled is a file's content, random-access, held in memory or in a temporary file.
type spooled struct {
	io.ReaderAt
	size int64
	tmp  *os.File
}

func (s *spooled) Close() error {
	if s.tmp == nil {
		return nil
	}
	name := s.tmp.Name()
	err := s.tmp.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}

// spool copies exactly size bytes of r into memory, or into a new temporary file in
// opts.TempDir when size is over spoolThreshold. The temporary file's name comes from
// os.CreateTemp, never from the archive.
func spool(r io.Reader, size int64, opts Options) (*spooled, error) {
	if size <= spoolThreshold {
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return &spooled{ReaderAt: bytes.NewReader(buf), size: size}, nil
	}
	tmp, err := os.CreateTemp(opts.TempDir, "portcullis-scan-*")
	if err != nil {
		return nil, err
	}
	s := &spooled{ReaderAt: tmp, size: size, tmp: tmp}
	n, err := io.Copy(tmp, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("short file: %d of %d bytes", n, size)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}
