package recovery

import (
	"fmt"
	"os"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// PlainObjectDisagreements opens the pool at path read-only and tries
// every value of candidates(base) in every object pointer field of every
// allocated slot, with the pool read at its own base and through a
// relocation table: it returns each value plainObject accepts and pointer
// refuses, and how many values plainObject accepted.
func PlainObjectDisagreements(path string, candidates func(base uint64) []uint64) ([]string, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	p, err := Open(f, Options{Mapper: device.Private{}, ReadOnly: true, FullValidation: true})
	if err != nil {
		return nil, 0, err
	}
	defer p.Close()
	var bad []string
	accepted := 0
	for _, relocated := range []bool{false, true} {
		r := &ptrRules{h: p.Header, mem: p.Dev.Bytes(), types: p.Types, stateHigh: p.State.SlabHigh, high: p.State.SlabHigh}
		vs := candidates(p.Header.Base)
		if relocated {
			// Read as if the pool had been at base-1<<40 and were going to
			// its base: the candidates are moved there.
			old := p.Header.Base - 1<<40
			r.swizzling = true
			r.table.Old, r.table.Target, r.table.Size = []uint64{old}, p.Header.Base, p.Header.Size
			for i := range vs {
				vs[i] = vs[i] - p.Header.Base + old
			}
		}
		r.targets, _ = pointerTargets(p.Types, func(int, layout.Pointer) bool { return true })
		r.setGeometry()
		r.index(p.Slabs)
		for k := range r.heads {
			hd := &r.heads[k]
			s := ptrSite{head: hd}
			ptrs := hd.td.Ptrs
			for w := range uint32(hd.sh.Slots) {
				if hd.bm[w/8]&(1<<(w%8)) == 0 {
					continue
				}
				s.slot = w
				for pi := range ptrs {
					if ptrs[pi].Kind != layout.PtrObject {
						continue
					}
					s.ptr, s.target = &ptrs[pi], r.targets[hd.sh.Type-1][pi]
					for _, v := range vs {
						if !r.plainObject(&s, v) {
							continue
						}
						accepted++
						var why error
						if !r.pointer(&s, v, func(_ ptrSite, _ string, err error) bool { why = err; return false }) {
							bad = append(bad, fmt.Sprintf("%s = %#x (relocated %v): %v", s.where(), v, relocated, why))
						}
					}
				}
			}
		}
	}
	return bad, accepted, nil
}
