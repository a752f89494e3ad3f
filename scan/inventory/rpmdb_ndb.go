package inventory

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

// rpm's own "ndb" format (rpm's lib/backend/ndb/rpmpkg.c), little-endian: a 32-byte header
// (magic, version, generation, number of slot pages) sharing the first of the 4 KiB slot
// pages with the slots; each 16-byte slot (magic, package number, block offset, block
// count) points at a blob of 16-byte blocks: a 16-byte blob header (magic, package
// number, generation, length), the header, then a tail.
const (
	ndbMagic        = 'R' | 'p'<<8 | 'm'<<16 | 'P'<<24
	ndbSlotMagic    = 'S' | 'l'<<8 | 'o'<<16 | 't'<<24
	ndbBlobMagic    = 'B' | 'l'<<8 | 'b'<<16 | 'S'<<24
	ndbSlotPage     = 4096
	ndbSlotSize     = 16
	ndbBlockSize    = 16
	ndbMaxSlotPages = 2048 // as go-rpmdb, 8 MiB of slots: about half a million packages
)

// ndbRpmBlobs calls fn with the header of each used slot of an ndb database.
func ndbRpmBlobs(ctx context.Context, r io.ReaderAt, size, maxHeader int64, fn func([]byte) error) error {
	hdr, err := readPage(r, 0, 32, "ndb header")
	if err != nil {
		return err
	}
	version, slotPages := binary.LittleEndian.Uint32(hdr[4:]), int64(binary.LittleEndian.Uint32(hdr[12:]))
	if version != 0 || slotPages == 0 || slotPages > ndbMaxSlotPages || slotPages*ndbSlotPage > size {
		return fmt.Errorf("%w: ndb: version %d with %d slot pages", ErrMalformed, version, slotPages)
	}
	slots, err := readPage(r, 0, int(slotPages*ndbSlotPage), "ndb slots")
	if err != nil {
		return err
	}
	for s := slots[2*ndbSlotSize:]; len(s) >= ndbSlotSize; s = s[ndbSlotSize:] {
		if err := ctx.Err(); err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(s) != ndbSlotMagic {
			return fmt.Errorf("%w: ndb: bad slot", ErrMalformed)
		}
		pkg := binary.LittleEndian.Uint32(s[4:])
		if pkg == 0 {
			continue // a free slot
		}
		off, blocks := int64(binary.LittleEndian.Uint32(s[8:]))*ndbBlockSize, int64(binary.LittleEndian.Uint32(s[12:]))
		blob, err := ndbBlob(r, size, maxHeader, pkg, off, blocks)
		if err != nil {
			return err
		}
		if err := fn(blob); err != nil {
			return err
		}
	}
	return nil
}

// ndbBlob reads the blob of package pkg stored in blocks blocks at offset off.
func ndbBlob(r io.ReaderAt, size, maxHeader int64, pkg uint32, off, blocks int64) ([]byte, error) {
	head, err := readPage(r, off, 16, "ndb blob header")
	if err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(head) != ndbBlobMagic || binary.LittleEndian.Uint32(head[4:]) != pkg {
		return nil, fmt.Errorf("%w: ndb: package %d: bad blob header", ErrMalformed, pkg)
	}
	length := int64(binary.LittleEndian.Uint32(head[12:]))
	if length > maxHeader {
		return nil, fmt.Errorf("%w: ndb: package %d: a header of %d bytes, over the limit of %d", ErrLimit, pkg, length, maxHeader)
	}
	if 16+length > blocks*ndbBlockSize || off+16+length > size {
		return nil, fmt.Errorf("%w: ndb: package %d: a header of %d bytes does not fit its blocks", ErrMalformed, pkg, length)
	}
	return readPage(r, off+16, int(length), "ndb blob")
}
