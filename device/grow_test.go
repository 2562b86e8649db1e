package device_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// growMappers are the Mappers whose devices grow, with whether the
// device writes the file (a private one never does).
func growMappers() []struct {
	name   string
	m      device.Mapper
	writes bool
} {
	ms := []struct {
		name   string
		m      device.Mapper
		writes bool
	}{
		{"msync", device.Msync{}, true},
		{"emulated", &device.Emulator{}, true},
		{"private", device.Private{}, false},
	}
	if device.DaxInstruction() != "" {
		ms = append(ms, struct {
			name   string
			m      device.Mapper
			writes bool
		}{"dax-forced", device.Dax{Force: true}, true})
	}
	return ms
}

// TestGrowInPlace grows each device in steps, an unaligned size first:
// the mapping stays at its address, what it held stays, the new part reads
// zeros and takes stores and flushes, and devices that write the file
// extend it and make what was flushed there durable.
func TestGrowInPlace(t *testing.T) {
	const first = poolSize + 100 // not a whole page
	for _, tc := range growMappers() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFile(t, fastDir(t), first)
			d, err := tc.m.Map(f, first, device.MapRequest{Reserve: 16 * poolSize})
			require.NoError(t, err)
			defer d.Close()
			base := addrRange(d).Start
			copy(d.Bytes()[first-5:], "tail!")
			d.Flush(first-5, 5)
			require.NoError(t, d.Fence())
			g, ok := d.(device.Grower)
			require.True(t, ok, "%T is not a Grower", d)
			for _, size := range []int{2 * poolSize, 5 * poolSize, 16 * poolSize} {
				require.NoError(t, g.Grow(size))
				mem := d.Bytes()
				require.Len(t, mem, size)
				assert.Equal(t, base, addrRange(d).Start, "the mapping moved")
				assert.Equal(t, "tail!", string(mem[first-5:first]))
				assert.True(t, bytes.Equal(make([]byte, 1000), mem[size-1000:]), "the new part reads zeros")
				copy(mem[size-10:], "grown end!")
				d.Flush(size-10, 10)
				require.NoError(t, d.Fence())
			}
			fi, err := f.Stat()
			require.NoError(t, err)
			if !tc.writes {
				assert.EqualValues(t, first, fi.Size(), "a private device never writes the file")
				return
			}
			assert.EqualValues(t, 16*poolSize, fi.Size())
			img := readFile(t, f)
			assert.Equal(t, "tail!", string(img[first-5:first]))
			assert.Equal(t, "grown end!", string(img[16*poolSize-10:]))
			assert.Equal(t, "grown end!", string(img[5*poolSize-10:5*poolSize]))
		})
	}
}

// TestGrowRefused: a device grows only inside the reservation made at
// Map, and not while a subscriber follows its write-backs, unless it
// follows growth too (device.GrowthFollower).
func TestGrowRefused(t *testing.T) {
	for _, tc := range growMappers() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFile(t, fastDir(t), poolSize)
			plain := mapFile(t, tc.m, f, device.MapRequest{})
			err := plain.(device.Grower).Grow(2 * poolSize)
			require.ErrorIs(t, err, device.ErrNoGrowth)
			assert.Contains(t, err.Error(), "0 bytes of address space were reserved")
			assert.Len(t, plain.Bytes(), poolSize)

			f2 := newFile(t, fastDir(t), poolSize)
			d, err := tc.m.Map(f2, poolSize, device.MapRequest{Reserve: 4 * poolSize})
			require.NoError(t, err)
			defer d.Close()
			err = d.(device.Grower).Grow(8 * poolSize)
			require.ErrorIs(t, err, device.ErrNoGrowth, "beyond the reservation")
			assert.Len(t, d.Bytes(), poolSize)

			cancel := d.Subscribe(&recorder{})
			err = d.(device.Grower).Grow(2 * poolSize)
			require.ErrorIs(t, err, device.ErrNoGrowth, "with a subscriber")
			assert.Contains(t, err.Error(), "subscribers")
			// A subscriber that follows growth lets the device grow, and
			// is told the new size before the growth returns, and so
			// before any write-back in the new part.
			fol := &follower{}
			cancelF := d.Subscribe(fol)
			err = d.(device.Grower).Grow(2 * poolSize)
			require.ErrorIs(t, err, device.ErrNoGrowth, "with a subscriber that does not follow growth")
			assert.Empty(t, fol.log)
			cancel()
			require.NoError(t, d.(device.Grower).Grow(2*poolSize))
			d.Flush(2*poolSize-64, 64)
			require.NoError(t, d.Fence())
			want := []string{fmt.Sprintf("grown %d", 2*poolSize), fmt.Sprintf("wb %d+64", 2*poolSize-64), "fence"}
			assert.Equal(t, want, fol.log)
			cancelF()
		})
	}
}

// follower is a recorder that follows growth.
type follower struct{ recorder }

func (f *follower) Grown(size int) { f.log = append(f.log, fmt.Sprintf("grown %d", size)) }

// TestGrowReservationAvoids: the reservation, not only the mapping, keeps
// clear of the ranges to avoid, and a free hint is taken whole.
func TestGrowReservationAvoids(t *testing.T) {
	const reserve = 64 * poolSize
	probe := mapFile(t, device.Private{}, newFile(t, t.TempDir(), poolSize), device.MapRequest{Reserve: reserve})
	hint := addrRange(probe).Start
	require.NoError(t, probe.Close())

	d := mapFile(t, device.Private{}, newFile(t, t.TempDir(), poolSize), device.MapRequest{Hint: hint, Reserve: reserve})
	assert.Equal(t, hint, addrRange(d).Start, "a free hint is taken")
	require.NoError(t, d.Close())

	// A range to avoid just past where the pool would map: the pool
	// itself would fit at the hint, its reservation would not.
	avoid := device.Range{Start: hint + 8*poolSize, Len: poolSize}
	d = mapFile(t, device.Private{}, newFile(t, t.TempDir(), poolSize), device.MapRequest{Avoid: []device.Range{avoid}, Reserve: reserve})
	r := device.Range{Start: addrRange(d).Start, Len: reserve}
	assert.False(t, r.Overlaps(avoid), "reservation %#x+%#x overlaps %#x+%#x", r.Start, r.Len, avoid.Start, avoid.Len)
	require.NoError(t, d.(device.Grower).Grow(reserve))
}

// TestEmulatedGrowCrashImages: after a growth, crash images cover the
// new size, holding what was made durable there and nothing else.
func TestEmulatedGrowCrashImages(t *testing.T) {
	f := newFile(t, fastDir(t), poolSize)
	e := &device.Emulator{}
	dev, err := e.Map(f, poolSize, device.MapRequest{Reserve: 4 * poolSize})
	require.NoError(t, err)
	defer dev.Close()
	d := e.Device()
	require.NoError(t, d.Grow(3*poolSize))
	mem := d.Bytes()
	copy(mem[2*poolSize:], "durable")
	d.Flush(2*poolSize, 7)
	require.NoError(t, d.Fence())
	copy(mem[3*poolSize-8:], "volatile")
	img := d.CrashImage(nil)
	require.Len(t, img, 3*poolSize)
	assert.Equal(t, "durable", string(img[2*poolSize:2*poolSize+7]))
	assert.Equal(t, make([]byte, 8), img[3*poolSize-8:])
	assert.Equal(t, []int{3*poolSize/device.LineSize - 1}, d.DirtyLines())
	img = d.CrashImage(d.DirtyLines())
	assert.Equal(t, "volatile", string(img[3*poolSize-8:]))
	assert.Len(t, d.Durable(), 3*poolSize)
}

// TestGrowFileLongerAlready: a file longer than the mapping, as a growth
// interrupted before its header leaves, is grown into without losing
// what it holds past the old end (the pool never put anything there, but
// the device must not truncate).
func TestGrowFileLongerAlready(t *testing.T) {
	f := newFile(t, fastDir(t), 4*poolSize)
	_, err := f.WriteAt([]byte("beyond"), 3*poolSize)
	require.NoError(t, err)
	d, err := device.Msync{}.Map(f, poolSize, device.MapRequest{Reserve: 4 * poolSize})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.(device.Grower).Grow(2*poolSize))
	fi, err := f.Stat()
	require.NoError(t, err)
	assert.EqualValues(t, 4*poolSize, fi.Size())
	require.NoError(t, d.(device.Grower).Grow(4*poolSize))
	assert.Equal(t, "beyond", string(d.Bytes()[3*poolSize:3*poolSize+6]))
}
