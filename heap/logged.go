package heap

// loggedSet records the ranges a transaction logged, by offset, with the
// logged length. Most transactions log a few ranges: those stay in a small
// array searched linearly, and only a larger transaction builds a map.
type loggedSet struct {
	n     int
	small [8]struct {
		off uint64
		len uint32
	}
	big map[uint64]uint32
}

// get returns the length logged at off; a nil set holds nothing.
func (s *loggedSet) get(off uint64) (uint32, bool) {
	if s == nil {
		return 0, false
	}
	if s.big != nil {
		l, ok := s.big[off]
		return l, ok
	}
	for i := range s.n {
		if s.small[i].off == off {
			return s.small[i].len, true
		}
	}
	return 0, false
}

// put records that n bytes at off are logged.
func (s *loggedSet) put(off uint64, n uint32) {
	if s.big == nil {
		for i := range s.n {
			if s.small[i].off == off {
				s.small[i].len = n
				return
			}
		}
		if s.n < len(s.small) {
			s.small[s.n].off, s.small[s.n].len = off, n
			s.n++
			return
		}
		s.big = make(map[uint64]uint32, 2*len(s.small))
		for _, e := range s.small[:s.n] {
			s.big[e.off] = e.len
		}
	}
	s.big[off] = n
}

// reset empties the set. A map built by a large transaction is dropped:
// clearing it would cost its capacity in every later transaction.
func (s *loggedSet) reset() {
	if s == nil {
		return
	}
	s.n = 0
	s.big = nil
}
