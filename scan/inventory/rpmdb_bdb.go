package inventory

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

// Berkeley DB hash databases (libdb's dbinc/db_page.h), as rpm before 4.16 kept Packages:
// key the package number, value the header, stored off-page on a chain of overflow pages.
const (
	bdbHashMagic   = 0x061561
	bdbPageHeader  = 26 // lsn, pgno, prev_pgno, next_pgno, entries, hf_offset, level, type
	bdbHashMeta    = 8
	bdbHashPage    = 13
	bdbHashPageOld = 2 // unsorted hash pages of libdb before 4.6 (RHEL 5)
	bdbOverflow    = 7
	bdbItemOffPage = 3 // H_OFFPAGE: type, 3 unused bytes, first overflow page, total length
)

// bdbRpmBlobs calls fn with each value stored off-page in a Berkeley DB hash database: rpm's
// headers. Values stored on the page (the next-package-number record) are skipped.
func bdbRpmBlobs(ctx context.Context, r io.ReaderAt, size, maxHeader int64, fn func([]byte) error) error {
	meta, err := readPage(r, 0, 512, "Berkeley DB metadata")
	if err != nil {
		return err
	}
	var order binary.ByteOrder = binary.LittleEndian
	if binary.BigEndian.Uint32(meta[12:]) == bdbHashMagic {
		order = binary.BigEndian
	}
	pageSize := order.Uint32(meta[20:])
	switch {
	case order.Uint32(meta[12:]) != bdbHashMagic || meta[25] != bdbHashMeta:
		return fmt.Errorf("%w: Berkeley DB: not a hash database", ErrMalformed)
	case pageSize < 512 || pageSize > 65536 || pageSize&(pageSize-1) != 0:
		return fmt.Errorf("%w: Berkeley DB: page size %d", ErrMalformed, pageSize)
	case meta[24] != 0:
		return fmt.Errorf("%w: Berkeley DB: encrypted", ErrMalformed)
	}
	inFile := uint64(size / int64(pageSize))
	if inFile == 0 {
		return fmt.Errorf("%w: Berkeley DB: shorter than a page", ErrMalformed)
	}
	db := &bdb{r: r, order: order, pageSize: int(pageSize), maxHeader: maxHeader}
	db.last = min(uint64(order.Uint32(meta[32:])), inFile-1)
	db.seen = newPageSet(db.last)
	for n := uint64(1); n <= db.last; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := db.hashPage(n, fn); err != nil {
			return err
		}
	}
	return nil
}

type bdb struct {
	r         io.ReaderAt
	order     binary.ByteOrder
	pageSize  int
	last      uint64  // the last page number
	seen      pageSet // overflow pages already read
	maxHeader int64
}

func (db *bdb) read(n uint64) ([]byte, error) {
	return readPage(db.r, int64(n)*int64(db.pageSize), db.pageSize, "Berkeley DB page")
}

// hashPage calls fn with the off-page values of page n when it is a hash page. Items come
// in key, value pairs; their offsets follow the page header.
func (db *bdb) hashPage(n uint64, fn func([]byte) error) error {
	p, err := db.read(n)
	if err != nil {
		return err
	}
	if p[25] != bdbHashPage && p[25] != bdbHashPageOld {
		return nil
	}
	entries := int(db.order.Uint16(p[20:]))
	if bdbPageHeader+2*entries > db.pageSize {
		return fmt.Errorf("%w: Berkeley DB: page %d: %d entries do not fit", ErrMalformed, n, entries)
	}
	for i := 1; i < entries; i += 2 {
		off := int(db.order.Uint16(p[bdbPageHeader+2*i:]))
		if off >= db.pageSize {
			return fmt.Errorf("%w: Berkeley DB: page %d: item at offset %d", ErrMalformed, n, off)
		}
		if p[off] != bdbItemOffPage {
			continue
		}
		if off+12 > db.pageSize {
			return fmt.Errorf("%w: Berkeley DB: page %d: item at offset %d", ErrMalformed, n, off)
		}
		blob, err := db.overflow(n, uint64(db.order.Uint32(p[off+4:])), int64(db.order.Uint32(p[off+8:])))
		if err != nil {
			return err
		}
		if err := fn(blob); err != nil {
			return err
		}
	}
	return nil
}

// overflow reads a value of length bytes, named by an item of hash page from, from the
// chain of overflow pages starting at page n. Each overflow page holds hf_offset bytes
// after its header and names the next page.
func (db *bdb) overflow(from, n uint64, length int64) ([]byte, error) {
	if length > db.maxHeader {
		return nil, fmt.Errorf("%w: Berkeley DB: page %d: a value of %d bytes, over the limit of %d", ErrLimit, from, length, db.maxHeader)
	}
	out := make([]byte, 0, min(length, 1<<20))
	for int64(len(out)) < length {
		if n == 0 || n > db.last || !db.seen.add(n) {
			return nil, fmt.Errorf("%w: Berkeley DB: page %d: overflow chain reaches page %d", ErrMalformed, from, n)
		}
		p, err := db.read(n)
		if err != nil {
			return nil, err
		}
		used := int(db.order.Uint16(p[22:]))
		if p[25] != bdbOverflow || bdbPageHeader+used > db.pageSize || int64(len(out)+used) > length {
			return nil, fmt.Errorf("%w: Berkeley DB: page %d: bad overflow page %d", ErrMalformed, from, n)
		}
		out = append(out, p[bdbPageHeader:bdbPageHeader+used]...)
		n = uint64(db.order.Uint32(p[16:]))
	}
	return out, nil
}
