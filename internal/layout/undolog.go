package layout

import (
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// The undo log starts with a line holding a magic word and the generation
// word. Entries follow from LogEntriesOff. An entry belongs to the live
// transaction only if it carries the current generation and its checksum
// holds; retiring the log is therefore one atomic 8-byte store (the
// generation) and never a rewrite of the entries.
const (
	logMagic      = 0x474f4c4f444e55 // "UNDOLOG"
	logMagicOff   = 0
	logGenOff     = 8
	LogEntriesOff = 64
	// LogEntryHeader is the fixed part of an entry: generation, pool
	// offset, length, checksum. The old bytes follow, padded to 8.
	LogEntryHeader = 32
)

// LogEntrySize returns the bytes an entry logging n bytes takes.
func LogEntrySize(n int) int { return LogEntryHeader + int(alignUp(uint64(n), 8)) }

// InitLog writes the log header of a new pool, generation 1.
func InitLog(log []byte) {
	le.PutUint64(log[logMagicOff:], logMagic)
	SetLogGen(log, 1)
}

// LogGen reads the log's generation, a sealed word: a flipped bit in it
// could otherwise make a retired transaction's entries current again.
func LogGen(log []byte) (uint64, error) {
	w := le.Uint64(log[logGenOff:])
	gen, ok := OpenWord(w)
	if !ok {
		return 0, fmt.Errorf("undo log: generation word %#x fails its check: %w", w, pmemgo.ErrCorrupt)
	}
	return gen, nil
}

// SetLogGen retires every entry of the current generation by making gen
// current, with one 8-byte store.
func SetLogGen(log []byte, gen uint64) { le.PutUint64(log[logGenOff:], SealWord(gen)) }

// LogGenOff is the offset of the generation word in the log region.
const LogGenOff = logGenOff

// PutLogEntry writes an entry logging old, the bytes at pool offset off,
// at the start of dst, and returns its size.
func PutLogEntry(dst []byte, gen, off uint64, old []byte) int {
	n := LogEntrySize(len(old))
	le.PutUint64(dst[0:], SealWord(gen))
	le.PutUint64(dst[8:], off)
	le.PutUint64(dst[16:], uint64(len(old)))
	copy(dst[LogEntryHeader:], old)
	clear(dst[LogEntryHeader+len(old) : n])
	le.PutUint64(dst[24:], entrySum(dst[:24], dst[LogEntryHeader:n]))
	return n
}

func entrySum(head, data []byte) uint64 {
	var d xxhash.Digest
	d.Reset()
	d.Write(head)
	d.Write(data)
	return d.Sum64()
}

// LogEntry is a decoded undo-log entry: the old bytes of [Off, Off+len(Old)).
type LogEntry struct {
	Off uint64
	Old []byte
}

// ScanLog returns the entries of the live transaction, in the order they
// were written, or none when the log is retired. An entry of another
// generation or with a bad checksum ends the log: it is the one being
// written when the crash came, and its range was not yet changed. An entry
// that checksums but names a range outside [lo, hi) is corruption.
func ScanLog(log []byte, lo, hi uint64) ([]LogEntry, error) {
	if m := le.Uint64(log[logMagicOff:]); m != logMagic {
		return nil, fmt.Errorf("undo log: bad magic %#x: %w", m, pmemgo.ErrCorrupt)
	}
	gen, err := LogGen(log)
	if err != nil {
		return nil, err
	}
	word := SealWord(gen)
	var out []LogEntry
	for p := LogEntriesOff; p+LogEntryHeader <= len(log); {
		e := log[p:]
		n := le.Uint64(e[16:])
		if le.Uint64(e[0:]) != word || n > uint64(len(log)-p-LogEntryHeader) {
			break
		}
		size := LogEntrySize(int(n))
		if p+size > len(log) || le.Uint64(e[24:]) != entrySum(e[:24], e[LogEntryHeader:size]) {
			break
		}
		off := le.Uint64(e[8:])
		if off < lo || off+n > hi || off+n < off {
			return nil, fmt.Errorf("undo log: entry at log offset %d covers [%d, +%d), outside [%d, %d): %w", p, off, n, lo, hi, pmemgo.ErrCorrupt)
		}
		out = append(out, LogEntry{Off: off, Old: e[LogEntryHeader : LogEntryHeader+int(n)]})
		p += size
	}
	return out, nil
}
