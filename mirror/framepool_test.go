package mirror

import "testing"

func TestFrameClass(t *testing.T) {
	prevClass, prevSize := -1, 0
	for _, n := range []int{1, 512, 513, 1000, 2048, 3000, 4096, 4097, 5000, 8192, 8193, 10000, 1 << 20, 1<<20 + 1, 3 << 20, 64 << 20, 1 << 30} {
		class, size := frameClass(n)
		if size < n || size > max(n+n/4, 2*n, minFrame) {
			t.Fatalf("frame of %d bytes: class size %d", n, size)
		}
		if class < prevClass || class == prevClass && size != prevSize || class >= len(framePools) {
			t.Fatalf("frame of %d bytes: class %d (size %d) after class %d (size %d)", n, class, size, prevClass, prevSize)
		}
		if c2, s2 := frameClass(size); c2 != class || s2 != size {
			t.Fatalf("class size %d maps to class %d size %d, not itself (%d)", size, c2, s2, class)
		}
		prevClass, prevSize = class, size
	}
	f := getFrame(5000)
	if len(f) != 0 || cap(f) < 5000 {
		t.Fatalf("getFrame(5000): len %d cap %d", len(f), cap(f))
	}
	putFrame(append(f, 1, 2, 3))
	if g := getFrame(5000); len(g) != 0 || cap(g) < 5000 {
		t.Fatalf("recycled frame: len %d cap %d", len(g), cap(g))
	}
}
