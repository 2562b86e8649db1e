package device_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

func TestSubscribersSeeFlushedLines(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			d := mapFile(t, tc.m, newFile(t, t.TempDir(), poolSize), device.MapRequest{})
			var a, b recorder
			cancelA := d.Subscribe(&a)
			d.Subscribe(&b)

			d.Flush(10, 100)
			d.Flush(130, 1)
			require.NoError(t, d.Fence())
			cancelA()
			cancelA()
			d.Flush(4096, 64)
			require.NoError(t, d.Fence())

			assert.Equal(t, []string{"wb 0+128", "wb 128+64", "fence"}, a.log)
			assert.Equal(t, []string{"wb 0+128", "wb 128+64", "fence", "wb 4096+64", "fence"}, b.log)
		})
	}
}

func TestFlushClipsToMapping(t *testing.T) {
	cases := []struct {
		name   string
		off, n int
		want   []string
	}{
		{"inside", 64, 64, []string{"wb 64+64"}},
		{"unaligned", 63, 2, []string{"wb 0+128"}},
		{"before start", -10, 20, []string{"wb 0+64"}},
		{"past end", poolSize - 1, 100, []string{"wb 65472+64"}},
		{"at end", poolSize, 10, nil},
		{"empty", 0, 0, nil},
		{"negative length", 64, -1, nil},
		{"huge", 1, int(^uint(0) >> 1), []string{"wb 0+65536"}},
	}
	for _, m := range mappers() {
		d := mapFile(t, m.m, newFile(t, t.TempDir(), poolSize), device.MapRequest{})
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				var r recorder
				cancel := d.Subscribe(&r)
				defer cancel()
				d.Flush(tc.off, tc.n)
				assert.Equal(t, tc.want, r.log)
				require.NoError(t, d.Fence())
			})
		}
	}
}

// selfCanceller cancels its own subscription on its first write-back.
type selfCanceller struct {
	cancel func()
	calls  int
}

func (s *selfCanceller) WriteBack(off, n int) {
	s.calls++
	s.cancel()
}

func (s *selfCanceller) Fence() { s.calls++ }

func TestCancelInsideCallback(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			d := mapFile(t, tc.m, newFile(t, t.TempDir(), poolSize), device.MapRequest{})
			var s selfCanceller
			s.cancel = d.Subscribe(&s)
			d.Flush(0, 64)
			require.NoError(t, d.Fence())
			d.Flush(0, 64)
			assert.Equal(t, 1, s.calls)
		})
	}
}

// nop is a Subscriber that ignores what it is told.
type nop struct{}

func (nop) WriteBack(off, n int) {}
func (nop) Fence()               {}

func TestSubscribeFromOtherGoroutines(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			d := mapFile(t, tc.m, newFile(t, t.TempDir(), poolSize), device.MapRequest{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for range 100 {
						d.Subscribe(nop{})()
					}
				})
			}
			for i := range 1000 {
				d.Flush(i*device.LineSize%poolSize, 8)
				require.NoError(t, d.Fence())
			}
			wg.Wait()
		})
	}
}

func TestUseAfterClose(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.m.Map(newFile(t, t.TempDir(), poolSize), poolSize, device.MapRequest{})
			require.NoError(t, err)
			var r recorder
			d.Subscribe(&r)
			require.NoError(t, d.Close())

			assert.NotPanics(t, func() { d.Flush(0, 64) })
			assert.ErrorIs(t, d.Fence(), device.ErrClosed)
			assert.ErrorIs(t, d.Close(), device.ErrClosed)
			assert.Nil(t, d.Bytes())
			assert.Empty(t, r.log)
		})
	}
}
