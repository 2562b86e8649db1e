package heap

import "testing"

func TestLoggedSet(t *testing.T) {
	var s *loggedSet
	if _, ok := s.get(1); ok {
		t.Fatal("a nil set holds nothing")
	}
	s.reset()
	s = &loggedSet{}
	for round := range 2 {
		// 20 ranges: the first 8 in the array, then all in the map.
		for i := range uint64(20) {
			s.put(i*64, uint32(i))
			s.put(i*64, uint32(i+1)) // a longer logging of the same offset
		}
		for i := range uint64(20) {
			if n, ok := s.get(i * 64); !ok || n != uint32(i+1) {
				t.Fatalf("round %d: offset %d: got %d, %v", round, i*64, n, ok)
			}
		}
		if _, ok := s.get(20 * 64); ok {
			t.Fatalf("round %d: offset never logged found", round)
		}
		s.reset()
		for i := range uint64(20) {
			if _, ok := s.get(i * 64); ok {
				t.Fatalf("round %d: offset %d still found after reset", round, i*64)
			}
		}
	}
}
