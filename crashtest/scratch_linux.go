package crashtest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

// scratch is where every image is built: an in-memory file (memfd) that
// the checker and the heap open by its /proc path, written through a
// shared mapping so that building an image costs no system call. It holds
// the durable state of the current point, kept apart in replay, with a
// variant's lines on top.
type scratch struct {
	f       *os.File
	path    string
	img     []byte // shared mapping of f
	initial []byte
	replay  []byte // durable state at the current point
	next    int    // journal entries applied to replay
	// changed, if set, is told of every line of img written, -1 for all.
	changed func(line int)
}

func newScratch(initial []byte) (*scratch, error) {
	fd, err := unix.MemfdCreate("pmemgo-crashtest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	// Named by the path the checker and the heap open it by, so that
	// device.RegisterPrivate finds those opens by name.
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	f := os.NewFile(uintptr(fd), path)
	s := &scratch{f: f, path: path, initial: initial}
	// Writing the image, rather than copying it into the mapping, spares a
	// page fault per page.
	if _, err := f.WriteAt(initial, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd: %w", err)
	}
	s.img, err = unix.Mmap(fd, 0, len(initial), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd: %w", err)
	}
	s.replay = append([]byte(nil), initial...)
	return s, nil
}

func (s *scratch) close() {
	_ = unix.Munmap(s.img)
	s.f.Close()
}

// reset goes back to the initial image, for a new pass over the points,
// by undoing the lines of the journal entries applied. A variant is never
// left applied, so those are the only lines that differ.
func (s *scratch) reset(journal []lineData) {
	for _, e := range journal[:s.next] {
		off := e.line * device.LineSize
		copy(s.replay[off:off+device.LineSize], s.initial[off:])
		copy(s.img[off:off+device.LineSize], s.initial[off:])
		s.change(e.line)
	}
	s.next = 0
}

func (s *scratch) change(line int) {
	if s.changed != nil {
		s.changed(line)
	}
}

// advance brings the durable state to journal prefix n.
func (s *scratch) advance(journal []lineData, n int) {
	for ; s.next < n; s.next++ {
		e := &journal[s.next]
		off := e.line * device.LineSize
		copy(s.replay[off:], e.data[:])
		copy(s.img[off:], e.data[:])
		s.change(e.line)
	}
}

// apply puts a variant's lines on top of the durable state; restore takes
// them off again.
func (s *scratch) apply(p *point, v []Line) {
	for _, l := range v {
		off := l.Index * device.LineSize
		copy(s.img[off:off+l.Words*8], extraData(p, l.Index))
		s.change(l.Index)
	}
}

func (s *scratch) restore(v []Line) {
	for _, l := range v {
		off := l.Index * device.LineSize
		copy(s.img[off:off+device.LineSize], s.replay[off:])
		s.change(l.Index)
	}
}

// image returns a copy of the image of p with v on top.
func (s *scratch) image(p *point, v []Line) []byte {
	s.apply(p, v)
	defer s.restore(v)
	return append([]byte(nil), s.img...)
}
