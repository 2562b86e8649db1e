package mirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// A replica's journal is two files, written alternately, each holding one
// record: what the replica did last, and the epoch and sequence number of
// the state its pool file holds once that is done. A record is made durable
// before the action it describes, so after a crash the newest valid record
// says what to finish: re-apply a batch (idempotent), or complete the
// rename of an installed snapshot. A record torn by a crash is invalid, and
// then the other file's record holds: it describes an action that was
// complete before the torn record was begun.
//
// The files are open only while a session uses the pool, so that a server
// holding many pools does not hold descriptors for the idle ones.
//
// Record layout (little-endian):
//
//	[0, 4)    magic "PMRJ"
//	[4, 8)    version
//	[8, 16)   counter: the record's number, one more than the previous
//	[16]      kind
//	[17, 24)  zero
//	[24, 32)  newest epoch seen for the pool
//	[32, 40)  epoch of the state after this record
//	[40, 48)  sequence number of the state after this record
//	[48, 56)  payload length
//	[56, 64)  xxhash64 of the payload
//	[64, 96)  chain value of the state after this record (wire.Chain)
//	[96, 104) xxhash64 of bytes [0, 96)
//	[104, ...) payload: for a batch record, the wire batch payload
const (
	journalMagic   = "PMRJ"
	journalVersion = 2
	recordHeader   = 104
	recordSumOff   = 96
)

// recordKind says what a journal record describes.
type recordKind uint8

const (
	// recordMark changes nothing in the pool file: a newer epoch was seen,
	// or a snapshot is starting (so any snapshot file left over is not to
	// be installed).
	recordMark recordKind = iota + 1
	// recordBatch is a batch being applied to the pool file.
	recordBatch
	// recordInstall is a complete snapshot file being renamed over the
	// pool file.
	recordInstall
)

// record is a journal record.
type record struct {
	counter          uint64
	kind             recordKind
	seen, epoch, seq uint64
	chain            wire.Chain
	payload          []byte
	// sum is the payload's xxhash64 when known, zero to compute it.
	sum uint64
	// streamed is the length of a payload written in place (see
	// journal.stream), when payload is nil.
	streamed int64
}

var le = binary.LittleEndian

func (r *record) encodeHeader(h []byte) {
	clear(h[:recordHeader])
	copy(h, journalMagic)
	le.PutUint32(h[4:], journalVersion)
	le.PutUint64(h[8:], r.counter)
	h[16] = byte(r.kind)
	le.PutUint64(h[24:], r.seen)
	le.PutUint64(h[32:], r.epoch)
	le.PutUint64(h[40:], r.seq)
	sum, n := r.sum, int64(len(r.payload))
	if r.streamed > 0 {
		n = r.streamed
	} else if sum == 0 {
		sum = xxhash.Sum64(r.payload)
	}
	le.PutUint64(h[48:], uint64(n))
	le.PutUint64(h[56:], sum)
	copy(h[64:], r.chain[:])
	le.PutUint64(h[recordSumOff:], xxhash.Sum64(h[:recordSumOff]))
}

// errNoRecord is returned by readRecord for an empty journal file.
var errNoRecord = errors.New("no record")

// readRecord reads and validates the record in f.
func readRecord(f *os.File) (record, error) {
	var h [recordHeader]byte
	n, err := f.ReadAt(h[:], 0)
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return record{}, errNoRecord
	case n < recordHeader:
		return record{}, fmt.Errorf("record header: %d of %d bytes", n, recordHeader)
	}
	size, err := recordSize(h[:])
	if err != nil {
		return record{}, err
	}
	if fi, err := f.Stat(); err != nil {
		return record{}, err
	} else if size > uint64(fi.Size())-recordHeader {
		return record{}, fmt.Errorf("record payload of %d bytes in a file of %d", size, fi.Size())
	}
	b := make([]byte, recordHeader+size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return record{}, fmt.Errorf("record: %w", err)
	}
	return decodeRecord(b)
}

// recordSize validates a record header and returns its payload's size.
func recordSize(h []byte) (uint64, error) {
	switch {
	case len(h) < recordHeader:
		return 0, fmt.Errorf("record header: %d of %d bytes", len(h), recordHeader)
	case string(h[:4]) != journalMagic:
		return 0, fmt.Errorf("record magic %q", h[:4])
	case le.Uint64(h[recordSumOff:]) != xxhash.Sum64(h[:recordSumOff]):
		return 0, fmt.Errorf("record header checksum fails")
	case le.Uint32(h[4:]) != journalVersion:
		return 0, fmt.Errorf("record version %d", le.Uint32(h[4:]))
	case recordKind(h[16]) < recordMark || recordKind(h[16]) > recordInstall:
		return 0, fmt.Errorf("record kind %d", h[16])
	}
	return le.Uint64(h[48:]), nil
}

// decodeRecord decodes and validates the record at the start of b, whose
// payload aliases b.
func decodeRecord(b []byte) (record, error) {
	size, err := recordSize(b)
	if err != nil {
		return record{}, err
	}
	if size > uint64(len(b)-recordHeader) {
		return record{}, fmt.Errorf("record payload of %d bytes, %d present", size, len(b)-recordHeader)
	}
	r := record{
		counter: le.Uint64(b[8:]), kind: recordKind(b[16]),
		seen: le.Uint64(b[24:]), epoch: le.Uint64(b[32:]), seq: le.Uint64(b[40:]),
		payload: b[recordHeader : recordHeader+size], sum: le.Uint64(b[56:]),
	}
	copy(r.chain[:], b[64:])
	if xxhash.Sum64(r.payload) != r.sum {
		return record{}, fmt.Errorf("record payload checksum fails")
	}
	return r, nil
}

// journal is the pair of journal files of one replicated pool.
type journal struct {
	base string
	// files are open between open and close.
	files [2]*os.File
	// last is the newest valid record, without its payload.
	last record
	hdr  [recordHeader]byte
	// noDSync is set once the kernel refused pwritev2 with RWF_DSYNC.
	noDSync bool
}

func journalPath(base string, i int) string { return fmt.Sprintf("%s.journal.%d", base, i) }

// readJournal returns the newest valid record of the journal at base,
// with its payload, without changing anything; ok is false when there is
// none. Each invalid record is passed to bad, with the reason.
func readJournal(base string, bad func(path string, err error)) (rec record, ok bool, err error) {
	for i := range 2 {
		path := journalPath(base, i)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return rec, false, err
		}
		r, rerr := readRecord(f)
		f.Close()
		switch {
		case rerr == nil:
			if !ok || r.counter > rec.counter {
				rec, ok = r, true
			}
		case !errors.Is(rerr, errNoRecord) && bad != nil:
			bad(path, rerr)
		}
	}
	return rec, ok, nil
}

// newJournal returns the journal at base whose newest record is last.
func newJournal(base string, last record) *journal {
	last.payload = nil
	return &journal{base: base, last: last}
}

// open opens, creating them if need be, the journal files.
func (j *journal) open() error {
	for i := range j.files {
		if j.files[i] != nil {
			continue
		}
		f, err := os.OpenFile(journalPath(j.base, i), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			j.close()
			return err
		}
		j.files[i] = f
	}
	return nil
}

// write makes r the newest record, durably. Its counter is set here.
func (j *journal) write(r record) error {
	if err := j.open(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	r.counter = j.last.counter + 1
	r.encodeHeader(j.hdr[:])
	f := j.files[r.counter%2]
	iov := [][]byte{j.hdr[:]}
	if len(r.payload) > 0 {
		iov = append(iov, r.payload)
	}
	n, err := j.writeSync(int(f.Fd()), iov)
	if err == nil && n != recordHeader+len(r.payload) {
		err = fmt.Errorf("short write: %d of %d bytes", n, recordHeader+len(r.payload))
	}
	if err != nil {
		return fmt.Errorf("journal %s: %w", f.Name(), err)
	}
	r.payload = nil
	j.last = r
	return nil
}

// writeSync writes iov at the start of fd and makes it durable: with one
// pwritev2(RWF_DSYNC) where the kernel has it (Linux 4.7), else pwritev
// and fdatasync.
func (j *journal) writeSync(fd int, iov [][]byte) (int, error) {
	if !j.noDSync {
		n, err := unix.Pwritev2(fd, iov, 0, unix.RWF_DSYNC)
		if err != unix.ENOSYS && err != unix.EOPNOTSUPP && err != unix.EINVAL {
			return n, err
		}
		j.noDSync = true
	}
	n, err := unix.Pwritev(fd, iov, 0)
	if err == nil {
		err = unix.Fdatasync(fd)
	}
	return n, err
}

// stream returns the file the next record goes to, for a payload written
// in place, in pieces, from offset recordHeader before the record itself
// (commitStream): a listed snapshot's chunks, which are then never held
// in memory. That file's record, the one before the newest, is lost; the
// newest, in the other file, still holds.
func (j *journal) stream() (*os.File, error) {
	if err := j.open(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return j.files[(j.last.counter+1)%2], nil
}

// commitStream makes r, whose payload of r.streamed bytes was written in
// place in the file stream returned, the newest record, durably. The
// payload's checksum is computed from the file.
func (j *journal) commitStream(r record) error {
	r.counter = j.last.counter + 1
	f := j.files[r.counter%2]
	d := xxhash.New()
	if _, err := io.Copy(d, io.NewSectionReader(f, recordHeader, r.streamed)); err != nil {
		return fmt.Errorf("journal %s: %w", f.Name(), err)
	}
	r.payload, r.sum = nil, d.Sum64()
	r.encodeHeader(j.hdr[:])
	// A crash before the sync may leave the header without the payload:
	// the payload's checksum then fails, and the record before holds.
	if _, err := f.WriteAt(j.hdr[:], 0); err != nil {
		return fmt.Errorf("journal %s: %w", f.Name(), err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("journal %s: %w", f.Name(), err)
	}
	j.last = r
	return nil
}

// close closes the journal files; write opens them again.
func (j *journal) close() error {
	var errs []error
	for i, f := range j.files {
		if f != nil {
			errs = append(errs, f.Close())
			j.files[i] = nil
		}
	}
	return errors.Join(errs...)
}
