package device_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// TestSealedGrow grows a sealed pool in place: the plaintext keeps its
// address and content, the new part reads zeros and takes stores, and
// after a clean close the file holds the grown pool, whose every line
// matches the digest at the next open.
func TestSealedGrow(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	d, err := m.Map(f, poolSize, device.MapRequest{Reserve: 8 * poolSize})
	require.NoError(t, err)
	base := addrRange(d).Start
	copy(d.Bytes()[poolSize-64:], "old tail")
	d.Flush(poolSize-64, 8)
	require.NoError(t, d.Fence())

	g, ok := d.(device.Grower)
	require.True(t, ok)
	require.NoError(t, g.Grow(4*poolSize))
	mem := d.Bytes()
	require.Len(t, mem, 4*poolSize)
	assert.Equal(t, base, addrRange(d).Start)
	assert.Equal(t, "old tail", string(mem[poolSize-64:][:8]))
	assert.Equal(t, make([]byte, 3*poolSize), mem[poolSize:])
	copy(mem[4*poolSize-64:], "new tail")
	d.Flush(4*poolSize-64, 8)
	require.NoError(t, d.Fence())
	assert.ErrorIs(t, g.Grow(16*poolSize), device.ErrNoGrowth, "beyond the reservation")
	require.NoError(t, d.Close())

	hdr, err := device.ReadSealedHeader(f)
	require.NoError(t, err)
	assert.Equal(t, uint64(4*poolSize), hdr.PoolSize)
	d, err = m.Map(f, 4*poolSize, device.MapRequest{})
	require.NoError(t, err)
	defer d.Close()
	checked, _ := device.SealedDigestChecked(d)
	assert.True(t, checked, "the grown file's lines match its digest")
	assert.Equal(t, "old tail", string(d.Bytes()[poolSize-64:][:8]))
	assert.Equal(t, "new tail", string(d.Bytes()[4*poolSize-64:][:8]))
	_, ok = d.(device.Grower)
	assert.True(t, ok)
	assert.ErrorIs(t, d.(device.Grower).Grow(8*poolSize), device.ErrNoGrowth, "mapped without a reservation")
}

// TestSealedGrowBlanksTail grows a sealed pool whose file is longer than
// its header says, as a growth interrupted by a crash leaves it, with
// records that are not blank there: the growth blanks them, so the new
// part reads zeros and the next open finds every line as the digest
// says.
func TestSealedGrowBlanksTail(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	_, err := f.WriteAt(bytes.Repeat([]byte{0xab}, poolSize), seal.FileSize(poolSize))
	require.NoError(t, err)
	d, err := m.Map(f, poolSize, device.MapRequest{Reserve: 4 * poolSize})
	require.NoError(t, err, "a file longer than its header says opens")
	require.NoError(t, d.(device.Grower).Grow(2*poolSize))
	assert.Equal(t, make([]byte, poolSize), d.Bytes()[poolSize:])
	copy(d.Bytes()[poolSize:], "first new line")
	d.Flush(poolSize, 64)
	require.NoError(t, d.Fence())
	require.NoError(t, d.Close())
	fi, err := f.Stat()
	require.NoError(t, err)
	assert.Equal(t, seal.FileSize(2*poolSize), fi.Size())

	d, err = m.Map(f, 2*poolSize, device.MapRequest{})
	require.NoError(t, err)
	defer d.Close()
	checked, _ := device.SealedDigestChecked(d)
	assert.True(t, checked)
	assert.Equal(t, "first new line", string(d.Bytes()[poolSize:][:14]))
	assert.Equal(t, make([]byte, poolSize-64), d.Bytes()[poolSize+64:])
}

// TestSealedHeaderAhead maps a sealed pool at a smaller size than its
// header says (a growth interrupted after the header was rewritten): it
// opens, its image has a header of its own size, and a larger size than
// the header's is refused.
func TestSealedHeaderAhead(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFileSize(t, m, 2*poolSize)
	d, err := m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	// An image of it, as a mirror or a backup sends, says the size it
	// holds.
	img, n, err := device.SealImage(d, bytes.NewReader(d.Bytes()))
	require.NoError(t, err)
	require.Equal(t, seal.FileSize(poolSize), n)
	b := make([]byte, n)
	_, err = img.ReadAt(b, 0)
	require.NoError(t, err)
	ih, err := seal.DecodeHeader(b)
	require.NoError(t, err)
	assert.Equal(t, uint64(poolSize), ih.PoolSize)
	keys, err := seal.NewKeys(sealKey)
	require.NoError(t, err)
	require.NoError(t, keys.Verify(&ih), "the image's header is MACed under the key")
	require.NoError(t, d.Close())
	_, err = m.Map(f, 4*poolSize, device.MapRequest{})
	require.Error(t, err)
	require.NoError(t, os.Truncate(f.Name(), seal.FileSize(poolSize)))
	_, err = device.ReadSealedHeader(f)
	require.Error(t, err, "a file shorter than its header says")
}

// TestSealedGrowNoAddressSpace maps a sealed pool asking for more room to
// grow than the address space holds (the file's reservation is twice the
// pool's): the pool maps, and refuses to grow.
func TestSealedGrowNoAddressSpace(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	d, err := m.Map(f, poolSize, device.MapRequest{Reserve: 64 << 40})
	require.NoError(t, err)
	defer d.Close()
	assert.ErrorIs(t, d.(device.Grower).Grow(2*poolSize), device.ErrNoGrowth)
	copy(d.Bytes(), "still a pool")
	d.Flush(0, 64)
	require.NoError(t, d.Fence())
}
