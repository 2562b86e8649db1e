package crashtest

import (
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// worker checks images: it has a scratch image of its own and the
// regions its pools are opened on, by the heap and by the checker alike.
type worker struct {
	s          *scratch
	m          *memMapper
	unregister func()
	// taken and images count the variants taken and the images checked.
	taken, images int
	// types caches decoded type tables by a hash of their content.
	types map[uint64][]layout.TypeDesc
}

func newWorker(initial []byte) (*worker, error) {
	s, err := newScratch(initial)
	if err != nil {
		return nil, err
	}
	w := &worker{s: s, m: newMemMapper(s)}
	// The checker maps images with device.Private: it too gets a region.
	if w.unregister, err = device.RegisterPrivate(s.f, w.m); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *worker) close() {
	if w.unregister != nil {
		w.unregister()
	}
	w.m.close()
	w.s.close()
}
