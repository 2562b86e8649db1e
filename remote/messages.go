package remote

import (
	"fmt"
	"regexp"
)

// PageSize is the unit the client fetches and the node serves reads in.
const PageSize = 4096

// LineSize is the unit of write-back.
const LineSize = 64

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckName returns an error unless name can name a region: 1 to MaxName
// letters, digits, '.', '_' or '-', not starting with a punctuation mark,
// so that it is also a safe file name on the node.
func CheckName(name string) error {
	if len(name) == 0 || len(name) > MaxName || !validName.MatchString(name) {
		return fmt.Errorf("region name %q: want 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit: %w", name, MaxName, ErrProtocol)
	}
	return nil
}

// WriterID identifies the local backup a writer keeps, so that the node
// can tell a client whether it was the last to write a region.
type WriterID [16]byte

// resolveReq asks for a region by name, claiming it for writing if claim.
type resolveReq struct {
	claim  bool
	writer WriterID
	name   string
}

func appendResolve(dst []byte, r resolveReq) []byte {
	var flag byte
	if r.claim {
		flag = 1
	}
	dst = append(dst, flag)
	dst = append(dst, r.writer[:]...)
	return append(dst, r.name...)
}

func decodeResolve(p []byte) (resolveReq, error) {
	if len(p) < 17 || p[0] > 1 {
		return resolveReq{}, fmt.Errorf("resolve request of %d bytes: %w", len(p), ErrProtocol)
	}
	r := resolveReq{claim: p[0] == 1, name: string(p[17:])}
	copy(r.writer[:], p[1:17])
	return r, CheckName(r.name)
}

// createReq asks for a new region of size bytes.
type createReq struct {
	size uint64
	name string
}

func appendCreate(dst []byte, c createReq) []byte {
	dst = le.AppendUint64(dst, c.size)
	return append(dst, c.name...)
}

func decodeCreate(p []byte) (createReq, error) {
	if len(p) < 8 {
		return createReq{}, fmt.Errorf("create request of %d bytes: %w", len(p), ErrProtocol)
	}
	c := createReq{size: le.Uint64(p), name: string(p[8:])}
	if err := CheckName(c.name); err != nil {
		return c, err
	}
	if c.size == 0 || c.size > MaxRegion || c.size%PageSize != 0 {
		return c, fmt.Errorf("create region %s of %d bytes: want a multiple of %d up to %d: %w", c.name, c.size, PageSize, int64(MaxRegion), ErrProtocol)
	}
	return c, nil
}

// Priority of a read on the node.
const (
	prioDemand   = 0 // an application thread waits on the page
	prioPrefetch = 1 // nobody waits yet: queued behind demand reads
)

// readReq asks for n bytes of a region at off.
type readReq struct {
	region uint32
	off    uint64
	n      uint32
	prio   uint8
}

const readSize = 4 + 8 + 4 + 1

func appendRead(dst []byte, r readReq) []byte {
	dst = le.AppendUint32(dst, r.region)
	dst = le.AppendUint64(dst, r.off)
	dst = le.AppendUint32(dst, r.n)
	return append(dst, r.prio)
}

func decodeRead(p []byte) (readReq, error) {
	if len(p) != readSize {
		return readReq{}, fmt.Errorf("read request of %d bytes, want %d: %w", len(p), readSize, ErrProtocol)
	}
	r := readReq{region: le.Uint32(p), off: le.Uint64(p[4:]), n: le.Uint32(p[12:]), prio: p[16]}
	if r.n == 0 || r.n > MaxRead || r.prio > prioPrefetch {
		return r, fmt.Errorf("read of %d bytes at priority %d: want 1 to %d bytes, priority 0 or 1: %w", r.n, r.prio, MaxRead, ErrProtocol)
	}
	return r, nil
}

// run is a range of bytes written back.
type run struct {
	off  uint64
	data []byte
}

// appendWrite appends a write-back batch: the region, the number of runs,
// and each run's offset, length and bytes.
func appendWrite(dst []byte, region uint32, runs []run) []byte {
	dst = le.AppendUint32(dst, region)
	dst = le.AppendUint32(dst, uint32(len(runs)))
	for _, r := range runs {
		dst = le.AppendUint64(dst, r.off)
		dst = le.AppendUint32(dst, uint32(len(r.data)))
		dst = append(dst, r.data...)
	}
	return dst
}

// writeSize returns the payload size of a batch of runs.
func writeSize(runs []run) int {
	n := 8
	for _, r := range runs {
		n += 12 + len(r.data)
	}
	return n
}

// decodeWrite decodes a write-back batch, checking every run against the
// region's size. The runs alias p.
func decodeWrite(p []byte, size func(region uint32) (uint64, bool)) (uint32, []run, error) {
	if len(p) < 8 {
		return 0, nil, fmt.Errorf("write request of %d bytes: %w", len(p), ErrProtocol)
	}
	region, count := le.Uint32(p), le.Uint32(p[4:])
	limit, ok := size(region)
	if !ok {
		return 0, nil, fmt.Errorf("write to unknown region %d: %w", region, ErrProtocol)
	}
	if count > MaxRuns || int(count) > (len(p)-8)/12 {
		return 0, nil, fmt.Errorf("write of %d runs in %d bytes: %w", count, len(p), ErrProtocol)
	}
	runs := make([]run, 0, count)
	rest := p[8:]
	for i := range count {
		if len(rest) < 12 {
			return 0, nil, fmt.Errorf("write run %d: header truncated: %w", i, ErrProtocol)
		}
		off, n := le.Uint64(rest), uint64(le.Uint32(rest[8:]))
		rest = rest[12:]
		if n > uint64(len(rest)) || off > limit || n > limit-off {
			return 0, nil, fmt.Errorf("write run %d [%d, +%d) outside region %d of %d bytes or its message: %w", i, off, n, region, limit, ErrProtocol)
		}
		runs = append(runs, run{off: off, data: rest[:n]})
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return 0, nil, fmt.Errorf("write request: %d bytes after the last run: %w", len(rest), ErrProtocol)
	}
	return region, runs, nil
}

// regionInfo answers a resolve or create.
type regionInfo struct {
	id         uint32
	size       uint64
	lastWriter WriterID
}

const regionSize = 4 + 8 + 16

func appendRegion(dst []byte, r regionInfo) []byte {
	dst = le.AppendUint32(dst, r.id)
	dst = le.AppendUint64(dst, r.size)
	return append(dst, r.lastWriter[:]...)
}

func decodeRegion(p []byte) (regionInfo, error) {
	if len(p) != regionSize {
		return regionInfo{}, fmt.Errorf("region reply of %d bytes, want %d: %w", len(p), regionSize, ErrProtocol)
	}
	r := regionInfo{id: le.Uint32(p), size: le.Uint64(p[4:])}
	copy(r.lastWriter[:], p[12:])
	if r.size == 0 || r.size > MaxRegion || r.size%PageSize != 0 {
		return r, fmt.Errorf("region reply: size %d: %w", r.size, ErrProtocol)
	}
	return r, nil
}

// Error codes a node replies with.
const (
	codeInternal uint16 = iota + 1
	codeNotFound
	codeExists
	codeBusy
	codeStale
	codeInvalid
	codeDenied
	// codeCorrupt: the node found the data asked for damaged.
	codeCorrupt
	// codeFull: the node has no room for a new region.
	codeFull
)

func appendError(dst []byte, code uint16, msg string) []byte {
	if len(msg) > 4<<10-2 {
		msg = msg[:4<<10-2]
	}
	dst = le.AppendUint16(dst, code)
	return append(dst, msg...)
}

func decodeError(p []byte) (uint16, string, error) {
	if len(p) < 2 {
		return 0, "", fmt.Errorf("error reply of %d bytes: %w", len(p), ErrProtocol)
	}
	return le.Uint16(p), string(p[2:]), nil
}
