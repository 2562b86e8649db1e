package device_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// writeSession maps f, stores v at each offset, flushes, fences and closes
// cleanly.
func writeSession(t *testing.T, m device.Sealed, f *os.File, v uint64, offs ...int) {
	t.Helper()
	d, err := m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	for _, off := range offs {
		binary.LittleEndian.PutUint64(d.Bytes()[off:], v)
		d.Flush(off, 8)
	}
	require.NoError(t, d.Fence())
	require.NoError(t, d.Close())
}

// TestSealedDigestFindsOlderRecord puts back, in a file closed cleanly,
// the record one of its lines had before: the record itself opens (it is
// bound to its pool and line, not to a version), and the file's digest
// refuses it, at open and in the check.
func TestSealedDigestFindsOlderRecord(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	writeSession(t, m, f, 1, 4096, 8192)
	old := bytes.Clone(readFile(t, f)[seal.RecordOff(4096):][:seal.RecordSize])
	writeSession(t, m, f, 2, 4096, 8192)

	d, err := m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err, "closed cleanly: the digest matches")
	checked, ok := device.SealedDigestChecked(d)
	assert.True(t, ok)
	assert.True(t, checked)
	require.NoError(t, d.Close())

	_, err = f.WriteAt(old, seal.RecordOff(4096))
	require.NoError(t, err)
	_, err = m.Map(f, poolSize, device.MapRequest{})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), fmt.Sprintf("file offset %d", seal.DigestOff))
	assert.Contains(t, err.Error(), "older state")
}

// TestSealedDigestAfterCrash: a session that wrote and did not close
// leaves the open digest record, so the next open cannot check the digest
// and says so; its clean close makes the file checkable again.
func TestSealedDigestAfterCrash(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	d, err := m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	binary.LittleEndian.PutUint64(d.Bytes()[4096:], 7)
	d.Flush(4096, 8)
	require.NoError(t, d.Fence())
	binary.LittleEndian.PutUint64(d.Bytes()[8192:], 7)
	d.Flush(8192, 8)
	require.NoError(t, d.Close(), "a close with a write-back not fenced is a crash")

	d, err = m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	checked, _ := device.SealedDigestChecked(d)
	assert.False(t, checked, "after a crash there is no exact digest to check")
	require.NoError(t, d.Close(), "nothing written: the file is left as it is")

	writeSession(t, m, f, 8, 4096)
	d, err = m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	checked, _ = device.SealedDigestChecked(d)
	assert.True(t, checked)
	assert.Equal(t, uint64(8), binary.LittleEndian.Uint64(d.Bytes()[4096:]))
	require.NoError(t, d.Close())
}

// TestSealedDigestRecordTampered: the digest records are sealed like
// lines and bound to their offsets; a blank, changed or swapped one is
// refused, naming its offset.
func TestSealedDigestRecordTampered(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	for _, tc := range []struct {
		name   string
		change func(b []byte)
		at     int64
	}{
		{"digest blanked", func(b []byte) { clear(b[seal.DigestOff:][:seal.RecordSize]) }, seal.DigestOff},
		{"digest key blanked", func(b []byte) { clear(b[seal.DigestKeyOff:][:seal.RecordSize]) }, seal.DigestKeyOff},
		{"digest bit flip", func(b []byte) { b[seal.DigestOff+40] ^= 1 }, seal.DigestOff},
		{"records swapped", func(b []byte) {
			a := bytes.Clone(b[seal.DigestOff:][:seal.RecordSize])
			copy(b[seal.DigestOff:], b[seal.DigestKeyOff:][:seal.RecordSize])
			copy(b[seal.DigestKeyOff:], a)
		}, seal.DigestKeyOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSealedFile(t, m)
			writeSession(t, m, f, 3, 4096)
			b := readFile(t, f)
			tc.change(b)
			_, err := f.WriteAt(b[:seal.HeaderSize], 0)
			require.NoError(t, err)
			_, err = m.Map(f, poolSize, device.MapRequest{})
			require.ErrorIs(t, err, pmemgo.ErrCorrupt)
			assert.Contains(t, err.Error(), fmt.Sprintf("file offset %d", tc.at))
		})
	}
}
