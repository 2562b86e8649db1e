package layout

import (
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// typeEntryHeader precedes each descriptor in the type table: the payload
// length and its xxhash.
const typeEntryHeader = 16

// TypeEntrySize returns the bytes an entry with a payload of n bytes takes.
func TypeEntrySize(n int) int { return typeEntryHeader + int(alignUp(uint64(n), 8)) }

// EncodeTypeEntry writes an entry for payload at the start of dst, which
// must hold TypeEntrySize(len(payload)) bytes.
func EncodeTypeEntry(dst, payload []byte) {
	le.PutUint64(dst, uint64(len(payload)))
	le.PutUint64(dst[8:], xxhash.Sum64(payload))
	n := copy(dst[typeEntryHeader:], payload)
	clear(dst[typeEntryHeader+n : TypeEntrySize(len(payload))])
}

// DecodeTypeTable decodes the first count descriptors of a type table
// whose used part is table. Type ids are 1-based positions in the result.
// tableOff is the file offset of the table, for messages.
func DecodeTypeTable(table []byte, count uint32, tableOff uint64) ([]TypeDesc, error) {
	var descs []TypeDesc
	off := 0
	for i := range int(count) {
		if len(table)-off < typeEntryHeader {
			return nil, fmt.Errorf("type table: entry %d at offset %d is past the used %d bytes: %w", i+1, tableOff+uint64(off), len(table), pmemgo.ErrCorrupt)
		}
		n := le.Uint64(table[off:])
		if n > uint64(len(table)-off-typeEntryHeader) {
			return nil, fmt.Errorf("type table: entry %d at offset %d claims %d bytes: %w", i+1, tableOff+uint64(off), n, pmemgo.ErrCorrupt)
		}
		payload := table[off+typeEntryHeader : off+typeEntryHeader+int(n)]
		if sum, want := le.Uint64(table[off+8:]), xxhash.Sum64(payload); sum != want {
			return nil, fmt.Errorf("type table: entry %d at offset %d: checksum %#x, computed %#x: %w", i+1, tableOff+uint64(off), sum, want, pmemgo.ErrCorrupt)
		}
		end := off + TypeEntrySize(int(n))
		if end > len(table) {
			return nil, fmt.Errorf("type table: entry %d at offset %d runs past the used %d bytes: %w", i+1, tableOff+uint64(off), len(table), pmemgo.ErrCorrupt)
		}
		for _, b := range table[off+typeEntryHeader+int(n) : end] {
			if b != 0 {
				return nil, fmt.Errorf("type table: entry %d at offset %d: non-zero padding: %w", i+1, tableOff+uint64(off), pmemgo.ErrCorrupt)
			}
		}
		var d TypeDesc
		if err := d.UnmarshalBinary(payload); err != nil {
			return nil, fmt.Errorf("type table: entry %d at offset %d: %w: %w", i+1, tableOff+uint64(off), err, pmemgo.ErrCorrupt)
		}
		descs = append(descs, d)
		off = end
	}
	if off != len(table) {
		return nil, fmt.Errorf("type table: %d entries end at %d bytes, state says %d used: %w", count, off, len(table), pmemgo.ErrCorrupt)
	}
	return descs, nil
}
