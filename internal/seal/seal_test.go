package seal_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/seal"
)

func keys(t testing.TB, b byte) *seal.Keys {
	t.Helper()
	k, err := seal.NewKeys(bytes.Repeat([]byte{b}, seal.KeySize))
	require.NoError(t, err)
	return k
}

func TestHeaderRoundTrip(t *testing.T) {
	k := keys(t, 1)
	uuid := [16]byte{1, 2, 3}
	h, err := seal.NewHeader(k, uuid, 1<<20)
	require.NoError(t, err)
	b := make([]byte, seal.HeaderSize)
	h.Encode(b)
	got, err := seal.DecodeHeader(b)
	require.NoError(t, err)
	assert.Equal(t, h, got)
	require.NoError(t, k.Verify(&got))
	require.ErrorIs(t, keys(t, 2).Verify(&got), pmemgo.ErrBadKey)
	assert.Equal(t, int64(seal.HeaderSize+(1<<20)/64*128), seal.FileSize(1<<20))
}

// TestHeaderMAC changes a field and fixes the keyless checksum, as someone
// without the key can: the MAC catches it.
func TestHeaderMAC(t *testing.T) {
	k := keys(t, 1)
	h, err := seal.NewHeader(k, [16]byte{9}, 1<<20)
	require.NoError(t, err)
	b := make([]byte, seal.HeaderSize)
	h.Encode(b)
	b[24] ^= 1 // the UUID
	binary.LittleEndian.PutUint64(b[112:], xxhash.Sum64(b[:112]))
	got, err := seal.DecodeHeader(b)
	require.NoError(t, err, "the structure is intact")
	err = k.Verify(&got)
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), "MAC")
}

func TestDecodeHeaderErrors(t *testing.T) {
	k := keys(t, 1)
	h, err := seal.NewHeader(k, [16]byte{9}, 1<<20)
	require.NoError(t, err)
	good := make([]byte, seal.HeaderSize)
	h.Encode(good)
	for _, tc := range []struct {
		name   string
		change func(b []byte) []byte
		want   error
	}{
		{"not sealed", func(b []byte) []byte { b[0] = 'X'; return b }, pmemgo.ErrNotPool},
		{"short", func(b []byte) []byte { return b[:50] }, pmemgo.ErrNotPool},
		{"checksum", func(b []byte) []byte { b[40]++; return b }, pmemgo.ErrCorrupt},
		{"version", func(b []byte) []byte {
			b[8] = 9
			binary.LittleEndian.PutUint64(b[112:], xxhash.Sum64(b[:112]))
			return b
		}, pmemgo.ErrVersion},
		{"pool size", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[40:], 100)
			binary.LittleEndian.PutUint64(b[112:], xxhash.Sum64(b[:112]))
			return b
		}, pmemgo.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := seal.DecodeHeader(tc.change(bytes.Clone(good)))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestSealOpen(t *testing.T) {
	k := keys(t, 1)
	uuid := [16]byte{7}
	s, err := k.NewSealer(uuid)
	require.NoError(t, err)
	plain := bytes.Repeat([]byte("0123456789abcdef"), 4)
	rec := make([]byte, seal.RecordSize)
	s.Seal(rec, 640, plain)
	assert.False(t, bytes.Contains(rec, plain[:16]))
	require.NoError(t, seal.CheckRecord(rec, 0))

	o := k.NewOpener(uuid)
	got := make([]byte, seal.LineSize)
	require.NoError(t, o.Open(got, rec, 640, 1000))
	assert.Equal(t, plain, got)

	for _, tc := range []struct {
		name   string
		opener *seal.Opener
		off    int64
		rec    func() []byte
	}{
		{"other line", o, 704, func() []byte { return rec }},
		{"other pool", k.NewOpener([16]byte{8}), 640, func() []byte { return rec }},
		{"other key", keys(t, 2).NewOpener(uuid), 640, func() []byte { return rec }},
		{"flipped", o, 640, func() []byte { r := bytes.Clone(rec); r[50] ^= 1; return r }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opener.Open(got, tc.rec(), tc.off, 1000)
			require.ErrorIs(t, err, pmemgo.ErrCorrupt)
			assert.Contains(t, err.Error(), "file offset 1000")
		})
	}

	blank := make([]byte, seal.RecordSize)
	require.NoError(t, o.Open(got, blank, 0, 0))
	assert.Equal(t, make([]byte, seal.LineSize), got, "a blank record is a line never written")
	bad := bytes.Clone(rec)
	bad[127] = 1
	require.ErrorIs(t, seal.CheckRecord(bad, 5), pmemgo.ErrCorrupt)
}

// TestNoncesDoNotRepeat seals the same line many times in two sessions:
// no two records share a salt and nonce.
func TestNoncesDoNotRepeat(t *testing.T) {
	k := keys(t, 1)
	seen := map[string]bool{}
	plain := make([]byte, seal.LineSize)
	rec := make([]byte, seal.RecordSize)
	for range 2 {
		s, err := k.NewSealer([16]byte{1})
		require.NoError(t, err)
		for range 1000 {
			s.Seal(rec, 0, plain)
			id := string(rec[:28])
			require.False(t, seen[id], "salt and nonce repeated")
			seen[id] = true
		}
	}
}

func TestNewKeysSize(t *testing.T) {
	_, err := seal.NewKeys(make([]byte, 16))
	require.ErrorIs(t, err, pmemgo.ErrBadKey)
}

func FuzzDecodeHeader(f *testing.F) {
	k := keys(f, 1)
	h, err := seal.NewHeader(k, [16]byte{9}, 1<<20)
	require.NoError(f, err)
	b := make([]byte, seal.HeaderSize)
	h.Encode(b)
	f.Add(b[:128])
	f.Add([]byte(seal.Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := seal.DecodeHeader(b)
		if err != nil {
			return
		}
		_ = k.Verify(&h)
		if h.PoolSize%seal.LineSize != 0 || h.PoolSize == 0 {
			t.Fatalf("accepted pool size %d", h.PoolSize)
		}
	})
}

// FuzzOpenRecord opens arbitrary records: a record that was not sealed
// for its line is an error, never a panic. The only line sealed under the
// key is at pool offset 128 (in whichever process sealed the seed: the
// salt in the record names the session key, derived from the key alone).
func FuzzOpenRecord(f *testing.F) {
	k := keys(f, 1)
	s, err := k.NewSealer([16]byte{3})
	require.NoError(f, err)
	rec := make([]byte, seal.RecordSize)
	s.Seal(rec, 128, bytes.Repeat([]byte{9}, seal.LineSize))
	f.Add(rec, int64(128))
	f.Add(make([]byte, seal.RecordSize), int64(0))
	o := k.NewOpener([16]byte{3})
	f.Fuzz(func(t *testing.T, b []byte, off int64) {
		if len(b) < seal.RecordSize {
			return
		}
		plain := make([]byte, seal.LineSize)
		err := o.Open(plain, b, off, 4096)
		if err == nil && !seal.IsBlank(b) && off != 128 {
			t.Fatalf("a record not sealed for pool offset %d opened", off)
		}
	})
}
