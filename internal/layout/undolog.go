package layout

import (
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// The undo log starts with a line holding a magic word and the generation
// word; the rest is split in two halves, and a transaction of generation g
// writes its entries in half g%2. An entry belongs to the live transaction
// only if it carries the current generation and its checksum holds, so
// retiring the log is one atomic 8-byte store (the next generation) and
// never a rewrite of the entries. Because consecutive generations use
// different halves, a transaction can write its first entries before the
// store that retires its predecessor is durable: the predecessor's entries
// stay intact until both are.
//
// A transaction ends its entries with a commit record listing every range
// it changed. A redo record (what this build writes) carries the new
// content of the ranges that were not made durable before it: a valid
// record means the transaction committed, whatever the ranges hold, and
// recovery copies that content back in place. So a store made after the
// commit (by the application, outside any transaction) can never make a
// committed transaction look torn and roll it back; ranges too large to
// carry are flushed and fenced before the record is written. Older pools
// may hold a hash record, which lists a hash of each range's new content
// instead: that transaction is kept only if every range still holds it.
// Either way retiring the log is off the commit's critical path.
const (
	logMagic      = 0x474f4c4f444e55 // "UNDOLOG"
	logMagicOff   = 0
	logGenOff     = 8
	LogEntriesOff = 64
	// LogEntryHeader is the fixed part of an entry: generation, pool
	// offset, length, checksum. The old bytes follow, padded to 8.
	LogEntryHeader = 32
	// commitOff marks a hash commit record in an entry's offset field,
	// redoOff a redo commit record.
	commitOff = ^uint64(0)
	redoOff   = ^uint64(1)
	// redoFlag marks, in a redo record's range length, a range whose new
	// content the record carries.
	redoFlag = uint64(1) << 63
	// CommitRangeSize is the size of one range in a commit record.
	CommitRangeSize = 24
)

// LogHalf returns the part of a log region of logSize bytes that the
// entries of generation gen use.
func LogHalf(logSize, gen uint64) (start, end int) {
	half := (logSize - LogEntriesOff) / 2 &^ 7
	start = LogEntriesOff + int(gen%2*half)
	return start, start + int(half)
}

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

// CommitRange is a range a committed transaction changed, with the hash of
// its new content. Redo is set when a redo record carries that content;
// Data is the content, in a decoded record.
type CommitRange struct {
	Off, Len, Hash uint64
	Redo           bool
	Data           []byte
}

// CommitRecordSize returns the bytes a commit record of n ranges takes.
func CommitRecordSize(n int) int { return LogEntrySize(8 + n*CommitRangeSize) }

// PutCommitRecord writes a commit record for ranges at the start of dst,
// hashing each range's content in mem, and returns its size.
func PutCommitRecord(dst []byte, gen uint64, entries int, ranges []CommitRange, mem []byte) int {
	n := 8 + len(ranges)*CommitRangeSize
	size := LogEntrySize(n)
	body := dst[LogEntryHeader : LogEntryHeader+n]
	le.PutUint64(body, uint64(entries))
	for i, r := range ranges {
		b := body[8+i*CommitRangeSize:]
		le.PutUint64(b, r.Off)
		le.PutUint64(b[8:], r.Len)
		le.PutUint64(b[16:], xxhash.Sum64(mem[r.Off:r.Off+r.Len]))
	}
	le.PutUint64(dst[0:], SealWord(gen))
	le.PutUint64(dst[8:], commitOff)
	le.PutUint64(dst[16:], uint64(n))
	clear(dst[LogEntryHeader+n : size])
	le.PutUint64(dst[24:], entrySum(dst[:24], dst[LogEntryHeader:size]))
	return size
}

// RedoRecordSize returns the bytes a redo record takes for ranges, of
// which those marked Redo carry their content.
func RedoRecordSize(ranges []CommitRange) int {
	n := 16 + len(ranges)*CommitRangeSize
	for _, r := range ranges {
		if r.Redo {
			n += int(alignUp(r.Len, 8))
		}
	}
	return LogEntrySize(n)
}

// PutRedoRecord writes a redo commit record for ranges at the start of
// dst, hashing each range's content in mem and copying the content of
// those marked Redo, and returns its size. entries is the number of undo
// entries before it. Each range's Hash is set, and its Data to the copy in
// dst for a range the record carries.
func PutRedoRecord(dst []byte, gen uint64, entries int, ranges []CommitRange, mem []byte) int {
	size := RedoRecordSize(ranges)
	body := dst[LogEntryHeader:size]
	le.PutUint64(body, uint64(entries))
	le.PutUint64(body[8:], uint64(len(ranges)))
	data := body[16+len(ranges)*CommitRangeSize:]
	for i, r := range ranges {
		b := body[16+i*CommitRangeSize:]
		content := mem[r.Off : r.Off+r.Len]
		le.PutUint64(b, r.Off)
		l := r.Len
		if r.Redo {
			l |= redoFlag
			n := copy(data, content)
			p := int(alignUp(uint64(n), 8))
			clear(data[n:p])
			ranges[i].Data = data[:n:n]
			data = data[p:]
		}
		ranges[i].Hash = xxhash.Sum64(content)
		le.PutUint64(b[8:], l)
		le.PutUint64(b[16:], ranges[i].Hash)
	}
	le.PutUint64(dst[0:], SealWord(gen))
	le.PutUint64(dst[8:], redoOff)
	le.PutUint64(dst[16:], uint64(len(body)))
	le.PutUint64(dst[24:], entrySum(dst[:24], body))
	return size
}

// Commit is a decoded commit record: how many entries precede it and the
// ranges the transaction changed. Redo is set for a redo record.
type Commit struct {
	Entries int
	Ranges  []CommitRange
	Redo    bool
}

// Keeps reports whether recovery keeps the transaction of this record,
// given the number of undo entries found before it: a redo record that
// follows all its entries is kept (its content is copied back in place by
// Redo), a hash record only if the ranges hold what it recorded.
func (c *Commit) Keeps(entries int, mem []byte) bool {
	return c.Entries == entries && (c.Redo || c.Holds(mem))
}

// RangesOrNil returns c's ranges; none for a nil c.
func (c *Commit) RangesOrNil() []CommitRange {
	if c == nil {
		return nil
	}
	return c.Ranges
}

// Apply copies the content a redo record carries back in place and
// returns the ranges it wrote.
func (c *Commit) Apply(mem []byte) []CommitRange {
	var out []CommitRange
	for _, r := range c.Ranges {
		if r.Data != nil {
			copy(mem[r.Off:r.Off+r.Len], r.Data)
			out = append(out, r)
		}
	}
	return out
}

// Stray returns the ranges of the record whose content in mem is no
// longer what the transaction committed: stores made after the commit
// outside any transaction.
func (c *Commit) Stray(mem []byte) []CommitRange {
	var out []CommitRange
	for _, r := range c.Ranges {
		if xxhash.Sum64(mem[r.Off:r.Off+r.Len]) != r.Hash {
			out = append(out, r)
		}
	}
	return out
}

// Holds reports whether every range of the record holds the content it
// was committed with: the commit reached the media whole.
func (c *Commit) Holds(mem []byte) bool {
	for _, r := range c.Ranges {
		if xxhash.Sum64(mem[r.Off:r.Off+r.Len]) != r.Hash {
			return false
		}
	}
	return true
}

// ScanLog returns the entries of the live transaction, in the order they
// were written, and its commit record if it wrote one; none when the log
// is retired. An entry of another generation or with a bad checksum ends
// the log: it is the one being written when the crash came, and its range
// was not yet changed. An entry or record that checksums but names a range
// outside [lo, hi) is corruption.
func ScanLog(log []byte, lo, hi uint64) ([]LogEntry, *Commit, error) {
	if m := le.Uint64(log[logMagicOff:]); m != logMagic {
		return nil, nil, fmt.Errorf("undo log: bad magic %#x: %w", m, pmemgo.ErrCorrupt)
	}
	gen, err := LogGen(log)
	if err != nil {
		return nil, nil, err
	}
	return scanHalf(log, gen, lo, hi)
}

// ScanPrev returns the redo record of the generation before the current
// one when its half of the log still holds it whole, after all its
// entries: the transaction committed, and its in-place writes may not be
// durable yet. A device that buffers stores (device.Buffering) lets a
// commit return once its record is durable and writes the ranges back
// after it, to be made durable by the next fence, usually the next
// commit's: until then recovery must copy the record's content back in
// place, before it rolls back or redoes the current generation. Retiring
// the log moves the generation past any record (RetireGen). A hash record (older pools) is never returned: its
// transaction's ranges were durable before the record.
func ScanPrev(log []byte, lo, hi uint64) (*Commit, error) {
	if m := le.Uint64(log[logMagicOff:]); m != logMagic {
		return nil, fmt.Errorf("undo log: bad magic %#x: %w", m, pmemgo.ErrCorrupt)
	}
	gen, err := LogGen(log)
	if err != nil || gen < 2 {
		return nil, err
	}
	entries, c, err := scanHalf(log, gen-1, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("previous generation %d: %w", gen-1, err)
	}
	if c == nil || !c.Redo || c.Entries != len(entries) {
		return nil, nil
	}
	return c, nil
}

// RetireGen returns the generation that retires a log at gen: three on,
// so that no record is live in either half. Two on would leave the
// previous generation gen+1, whose record a crash can leave whole in the
// log while gen+1 itself never became durable (on a device that buffers
// stores, the generation word and the record are made durable by one
// fence); gen+2 can hold nothing, since its entries are written only once
// gen+1 is durable.
func RetireGen(gen uint64) uint64 { return gen + 3 }

// scanHalf scans the half of generation gen; see ScanLog.
func scanHalf(log []byte, gen, lo, hi uint64) ([]LogEntry, *Commit, error) {
	word := SealWord(gen)
	start, end := LogHalf(uint64(len(log)), gen)
	if end > len(log) || start >= end {
		return nil, nil, fmt.Errorf("undo log: %d bytes is too small for two halves: %w", len(log), pmemgo.ErrCorrupt)
	}
	half := log[:end]
	var out []LogEntry
	for p := start; p+LogEntryHeader <= len(half); {
		e := half[p:]
		n := le.Uint64(e[16:])
		if le.Uint64(e[0:]) != word || n > uint64(len(half)-p-LogEntryHeader) {
			break
		}
		size := LogEntrySize(int(n))
		if p+size > len(half) || le.Uint64(e[24:]) != entrySum(e[:24], e[LogEntryHeader:size]) {
			break
		}
		off := le.Uint64(e[8:])
		body := e[LogEntryHeader : LogEntryHeader+int(n)]
		switch off {
		case commitOff:
			c, err := decodeCommit(body, lo, hi, p)
			return out, c, err
		case redoOff:
			c, err := decodeRedo(body, lo, hi, p)
			return out, c, err
		}
		if off < lo || off+n > hi || off+n < off {
			return nil, nil, fmt.Errorf("undo log: entry at log offset %d covers [%d, +%d), outside [%d, %d): %w", p, off, n, lo, hi, pmemgo.ErrCorrupt)
		}
		out = append(out, LogEntry{Off: off, Old: body})
		p += size
	}
	return out, nil, nil
}

func decodeCommit(body []byte, lo, hi uint64, at int) (*Commit, error) {
	if len(body) < 8 || (len(body)-8)%CommitRangeSize != 0 {
		return nil, fmt.Errorf("undo log: commit record at log offset %d has %d bytes: %w", at, len(body), pmemgo.ErrCorrupt)
	}
	c := &Commit{Entries: int(le.Uint64(body))}
	for b := body[8:]; len(b) > 0; b = b[CommitRangeSize:] {
		r := CommitRange{Off: le.Uint64(b), Len: le.Uint64(b[8:]), Hash: le.Uint64(b[16:])}
		if r.Off < lo || r.Off+r.Len > hi || r.Off+r.Len < r.Off {
			return nil, fmt.Errorf("undo log: commit record at log offset %d lists [%d, +%d), outside [%d, %d): %w", at, r.Off, r.Len, lo, hi, pmemgo.ErrCorrupt)
		}
		c.Ranges = append(c.Ranges, r)
	}
	return c, nil
}

func decodeRedo(body []byte, lo, hi uint64, at int) (*Commit, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("undo log: redo record at log offset %d: "+format+": %w", append([]any{at}, append(args, pmemgo.ErrCorrupt)...)...)
	}
	if len(body) < 16 {
		return nil, bad("%d bytes", len(body))
	}
	n := le.Uint64(body[8:])
	if n > uint64(len(body)-16)/CommitRangeSize {
		return nil, bad("%d ranges in %d bytes", n, len(body))
	}
	c := &Commit{Entries: int(le.Uint64(body)), Redo: true}
	data := body[16+n*CommitRangeSize:]
	for i := range n {
		b := body[16+i*CommitRangeSize:]
		l := le.Uint64(b[8:])
		r := CommitRange{Off: le.Uint64(b), Len: l &^ redoFlag, Hash: le.Uint64(b[16:]), Redo: l&redoFlag != 0}
		if r.Off < lo || r.Off+r.Len > hi || r.Off+r.Len < r.Off {
			return nil, bad("lists [%d, +%d), outside [%d, %d)", r.Off, r.Len, lo, hi)
		}
		if r.Redo {
			p := alignUp(r.Len, 8)
			if p > uint64(len(data)) {
				return nil, bad("range %d carries %d bytes, %d left", i, r.Len, len(data))
			}
			r.Data, data = data[:r.Len:r.Len], data[p:]
		}
		c.Ranges = append(c.Ranges, r)
	}
	if len(data) != 0 {
		return nil, bad("%d bytes after the last range's content", len(data))
	}
	return c, nil
}
