package seal_test

import (
	"testing"

	"github.com/pmemgo/pmemgo/internal/seal"
)

// BenchmarkLine measures what writing back one line of a sealed pool
// costs: its record sealed, its digest value computed, and both.
func BenchmarkLine(b *testing.B) {
	k := keys(b, 1)
	s, err := k.NewSealer([16]byte{1})
	if err != nil {
		b.Fatal(err)
	}
	d := seal.NewDigester(make([]byte, 32))
	line := make([]byte, seal.LineSize)
	line[0] = 1
	rec := make([]byte, seal.RecordSize)
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s.Seal(rec, int64(i)*seal.LineSize, line)
		}
	})
	b.Run("digest", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			d.Line(int64(i)*seal.LineSize, line)
		}
	})
	b.Run("both", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			d.Line(int64(i)*seal.LineSize, line)
			s.Seal(rec, int64(i)*seal.LineSize, line)
		}
	})
}
