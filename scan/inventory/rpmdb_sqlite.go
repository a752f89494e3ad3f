package inventory

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

// sqliteMagic starts every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// SQLite b-tree page types (https://www.sqlite.org/fileformat2.html, section 1.6).
const (
	sqliteInteriorTable = 0x05
	sqliteLeafTable     = 0x0d
)

// sqliteDB reads the tables of an SQLite 3 database file straight from its b-tree pages. No
// SQL runs: the schema in the file (views, generated columns, triggers) is never evaluated,
// and every page is read at most once.
type sqliteDB struct {
	r        io.ReaderAt
	pageSize int
	usable   int // page size less the reserved bytes at the end of each page
	pages    uint32
	seen     pageSet
	maxRow   int64
	// left is what remains of the file's size for the payloads of the rows read: each
	// row is stored once, so more payload bytes than the file holds means cells that
	// share their bytes (many cell pointers naming one cell).
	left int64
}

// sqliteRpmBlobs calls fn with the blob column of each row of rpm's Packages table:
// CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL).
func sqliteRpmBlobs(ctx context.Context, r io.ReaderAt, size, maxHeader int64, fn func([]byte) error) error {
	db, err := openSQLite(r, size, maxHeader)
	if err != nil {
		return err
	}
	root, err := db.tableRoot(ctx, "Packages")
	if err != nil {
		return err
	}
	return db.walkTable(ctx, root, func(row []byte) error {
		cols, err := sqliteColumns(row, 2) // hnum, blob
		if err != nil {
			return err
		}
		if len(cols) < 2 || !cols[1].isBlob() {
			return fmt.Errorf("%w: sqlite: Packages row without a blob column", ErrMalformed)
		}
		return fn(cols[1].data)
	})
}

func openSQLite(r io.ReaderAt, size, maxRow int64) (*sqliteDB, error) {
	hdr, err := readPage(r, 0, 100, "sqlite header")
	if err != nil {
		return nil, err
	}
	pageSize := int(binary.BigEndian.Uint16(hdr[16:]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if pageSize < 512 || pageSize&(pageSize-1) != 0 {
		return nil, fmt.Errorf("%w: sqlite: page size %d", ErrMalformed, pageSize)
	}
	usable := pageSize - int(hdr[20])
	if usable < 480 || hdr[21] != 64 || hdr[22] != 32 || hdr[23] != 32 {
		return nil, fmt.Errorf("%w: sqlite: bad header", ErrMalformed)
	}
	if enc := binary.BigEndian.Uint32(hdr[56:]); enc > 1 {
		return nil, fmt.Errorf("%w: sqlite: text encoding %d, not UTF-8", ErrMalformed, enc)
	}
	pages := uint32(min(size/int64(pageSize), 1<<32-1))
	return &sqliteDB{r: r, pageSize: pageSize, usable: usable, pages: pages, seen: newPageSet(uint64(pages)), maxRow: maxRow, left: size}, nil
}

// page reads page n (numbered from 1); reading a page a second time fails.
func (db *sqliteDB) page(n uint32) ([]byte, error) {
	if n == 0 || n > db.pages {
		return nil, fmt.Errorf("%w: sqlite: page %d out of range (%d pages)", ErrMalformed, n, db.pages)
	}
	if !db.seen.add(uint64(n)) {
		return nil, fmt.Errorf("%w: sqlite: page %d is linked twice", ErrMalformed, n)
	}
	return readPage(db.r, int64(n-1)*int64(db.pageSize), db.pageSize, "sqlite page")
}

// tableRoot finds the root page of a table in the schema table, whose root is page 1.
func (db *sqliteDB) tableRoot(ctx context.Context, name string) (uint32, error) {
	var root uint32
	err := db.walkTable(ctx, 1, func(row []byte) error {
		cols, err := sqliteColumns(row, 4) // type, name, tbl_name, rootpage; not sql
		if err != nil {
			return err
		}
		if len(cols) < 4 || string(cols[0].data) != "table" || !bytes.EqualFold(cols[1].data, []byte(name)) {
			return nil
		}
		n, ok := cols[3].integer()
		if !ok || n <= 0 || n > int64(db.pages) {
			return fmt.Errorf("%w: sqlite: table %s has root page %d", ErrMalformed, name, n)
		}
		root = uint32(n)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if root == 0 {
		return 0, fmt.Errorf("%w: sqlite: no %s table", ErrMalformed, name)
	}
	return root, nil
}

// walkTable calls fn with the payload of each row of the table b-tree rooted at page root,
// in rowid order.
func (db *sqliteDB) walkTable(ctx context.Context, root uint32, fn func([]byte) error) error {
	stack := []uint32{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p, err := db.page(n)
		if err != nil {
			return err
		}
		hdr := 0
		if n == 1 {
			hdr = 100 // the database header
		}
		typ := p[hdr]
		if typ != sqliteLeafTable && typ != sqliteInteriorTable {
			return fmt.Errorf("%w: sqlite: page %d is not a table b-tree page (type %#x)", ErrMalformed, n, typ)
		}
		cells, err := db.cellPointers(p, hdr, n)
		if err != nil {
			return err
		}
		switch typ {
		case sqliteLeafTable:
			for _, c := range cells {
				row, err := db.leafPayload(p, c)
				if err != nil {
					return err
				}
				if err := fn(row); err != nil {
					return err
				}
			}
		case sqliteInteriorTable:
			// Children go on the stack right to left, so the leftmost is read first.
			stack = append(stack, binary.BigEndian.Uint32(p[hdr+8:]))
			for i := len(cells) - 1; i >= 0; i-- {
				if cells[i]+4 > db.usable {
					return fmt.Errorf("%w: sqlite: page %d: cell out of the page", ErrMalformed, n)
				}
				stack = append(stack, binary.BigEndian.Uint32(p[cells[i]:]))
			}
			// Each entry must still be an unread page.
			if len(stack) > int(db.pages) {
				return fmt.Errorf("%w: sqlite: page %d: more children than pages", ErrMalformed, n)
			}
		}
	}
	return nil
}

// cellPointers returns the offsets of the cells of a b-tree page whose header starts at hdr.
func (db *sqliteDB) cellPointers(p []byte, hdr int, n uint32) ([]int, error) {
	hdrLen := 8
	if p[hdr] == sqliteInteriorTable {
		hdrLen = 12
	}
	count := int(binary.BigEndian.Uint16(p[hdr+3:]))
	start := hdr + hdrLen
	if start+2*count > db.usable {
		return nil, fmt.Errorf("%w: sqlite: page %d: %d cells do not fit", ErrMalformed, n, count)
	}
	cells := make([]int, count)
	for i := range cells {
		c := int(binary.BigEndian.Uint16(p[start+2*i:]))
		if c < start+2*count || c >= db.usable {
			return nil, fmt.Errorf("%w: sqlite: page %d: cell %d at offset %d", ErrMalformed, n, i, c)
		}
		cells[i] = c
	}
	return cells, nil
}

// leafPayload returns the payload of a table leaf cell, following its overflow pages.
func (db *sqliteDB) leafPayload(p []byte, c int) ([]byte, error) {
	size, n := sqliteVarint(p[c:db.usable])
	if n == 0 {
		return nil, fmt.Errorf("%w: sqlite: bad cell", ErrMalformed)
	}
	_, m := sqliteVarint(p[c+n : db.usable]) // rowid
	if m == 0 {
		return nil, fmt.Errorf("%w: sqlite: bad cell", ErrMalformed)
	}
	if size > uint64(db.maxRow) {
		return nil, fmt.Errorf("%w: sqlite: a row of %d bytes, over the limit of %d", ErrLimit, size, db.maxRow)
	}
	if size > uint64(db.pages)*uint64(db.usable) {
		return nil, fmt.Errorf("%w: sqlite: a row of %d bytes in a smaller file", ErrMalformed, size)
	}
	if db.left -= int64(size); db.left < 0 {
		return nil, fmt.Errorf("%w: sqlite: rows add up to more than the file", ErrMalformed)
	}
	pos, local := c+n+m, db.localSize(int(size))
	if pos+local > db.usable || (local < int(size) && pos+local+4 > db.usable) {
		return nil, fmt.Errorf("%w: sqlite: cell out of the page", ErrMalformed)
	}
	out := make([]byte, 0, min(int(size), 1<<20))
	out = append(out, p[pos:pos+local]...)
	if local == int(size) {
		return out, nil
	}
	next := binary.BigEndian.Uint32(p[pos+local:])
	for len(out) < int(size) {
		op, err := db.page(next)
		if err != nil {
			return nil, err
		}
		chunk := min(db.usable-4, int(size)-len(out))
		out = append(out, op[4:4+chunk]...)
		next = binary.BigEndian.Uint32(op)
	}
	return out, nil
}

// localSize is how many bytes of a table leaf cell's payload of size bytes are on the page
// itself; the rest is on overflow pages.
func (db *sqliteDB) localSize(size int) int {
	u := db.usable
	maxLocal := u - 35
	if size <= maxLocal {
		return size
	}
	minLocal := (u-12)*32/255 - 23
	k := minLocal + (size-minLocal)%(u-4)
	if k <= maxLocal {
		return k
	}
	return minLocal
}

// sqliteVarint decodes a big-endian variable-length integer of 1 to 9 bytes; n is 0 when b
// ends too soon.
func sqliteVarint(b []byte) (v uint64, n int) {
	for i := range 8 {
		if i >= len(b) {
			return 0, 0
		}
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	if len(b) < 9 {
		return 0, 0
	}
	return v<<8 | uint64(b[8]), 9
}

// sqliteValue is one column of a record: its serial type and its bytes.
type sqliteValue struct {
	typ  uint64
	data []byte
}

func (v sqliteValue) isBlob() bool { return v.typ >= 12 && v.typ%2 == 0 }

// integer decodes an integer column.
func (v sqliteValue) integer() (int64, bool) {
	switch {
	case v.typ == 8:
		return 0, true
	case v.typ == 9:
		return 1, true
	case v.typ >= 1 && v.typ <= 6:
		var x int64
		for _, b := range v.data {
			x = x<<8 | int64(b)
		}
		shift := 64 - 8*len(v.data)
		return x << shift >> shift, true // sign-extend
	}
	return 0, false
}

// sqliteColumns splits a record (https://www.sqlite.org/fileformat2.html, section 2.1) into
// its first n columns, fewer when it has fewer. The rest of the record header is not read:
// each of its one-byte serial types would otherwise cost a 32-byte sqliteValue.
func sqliteColumns(rec []byte, n int) ([]sqliteValue, error) {
	bad := func() error { return fmt.Errorf("%w: sqlite: bad record", ErrMalformed) }
	hdrLen, m := sqliteVarint(rec)
	if m == 0 || hdrLen < uint64(m) || hdrLen > uint64(len(rec)) {
		return nil, bad()
	}
	types, body := rec[m:hdrLen], rec[hdrLen:]
	cols := make([]sqliteValue, 0, n)
	for len(types) > 0 && len(cols) < n {
		t, m := sqliteVarint(types)
		if m == 0 {
			return nil, bad()
		}
		types = types[m:]
		var size uint64
		switch {
		case t <= 4:
			size = t
		case t == 5:
			size = 6
		case t == 6 || t == 7:
			size = 8
		case t == 10 || t == 11:
			return nil, bad()
		case t >= 12:
			size = (t - 12) / 2
		}
		if size > uint64(len(body)) {
			return nil, bad()
		}
		cols = append(cols, sqliteValue{typ: t, data: body[:size]})
		body = body[size:]
	}
	return cols, nil
}
