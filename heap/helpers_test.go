package heap_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// checkPool runs the offline checker on a closed pool and fails the test
// on any problem.
func checkPool(t *testing.T, path string) {
	t.Helper()
	err := recovery.CheckFile(path, func(p recovery.Problem) bool {
		t.Errorf("checker: %s", p)
		return true
	})
	require.NoError(t, err)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// poolMeta decodes the current header and heap state of a pool image.
// summaryBytes returns how many bytes of its region the slab summary of
// the pool image img, whose header is hdr, takes.
func summaryBytes(t *testing.T, img []byte, hdr *layout.Header) uint64 {
	t.Helper()
	sum, err := layout.DecodeSummary(img[hdr.SumOff:hdr.SumOff+hdr.SumSize], hdr)
	require.NoError(t, err)
	return sum.Size()
}

func poolMeta(t *testing.T, img []byte) (layout.Header, layout.State) {
	t.Helper()
	var hs [2]layout.Header
	var errs [2]error
	for i := range hs {
		hs[i], errs[i] = layout.DecodeHeader(img[layout.SlotOff(i):])
	}
	h := hs[0]
	if errs[0] != nil || (errs[1] == nil && hs[1].Seq > hs[0].Seq) {
		h = hs[1]
	}
	st, err := layout.DecodeState(img[layout.StateOff:], &h)
	require.NoError(t, err)
	return h, st
}

// editStoredType rewrites the stored descriptor of the named type in a
// closed pool, resealing everything, as if another build had stored it.
func editStoredType(t *testing.T, path, name string, edit func(*layout.TypeDesc)) {
	t.Helper()
	img := readFile(t, path)
	h, st := poolMeta(t, img)
	table := img[h.TypeOff : h.TypeOff+st.TypeBytes]
	descs, err := layout.DecodeTypeTable(table, st.Types, h.TypeOff)
	require.NoError(t, err)
	found := false
	var out []byte
	for i := range descs {
		if descs[i].Name == name {
			edit(&descs[i])
			descs[i].Hash = descs[i].ComputeHash()
			found = true
		}
		payload, err := descs[i].MarshalBinary()
		require.NoError(t, err)
		entry := make([]byte, layout.TypeEntrySize(len(payload)))
		layout.EncodeTypeEntry(entry, payload)
		out = append(out, entry...)
	}
	require.True(t, found, "type %s not stored", name)
	clear(img[h.TypeOff : h.TypeOff+h.TypeSize])
	copy(img[h.TypeOff:], out)
	st.TypeBytes = uint64(len(out))
	st.Encode(img[layout.StateOff:])
	require.NoError(t, os.WriteFile(path, img, 0o600))
}

// fastTempDir returns a directory removed after the test, in /dev/shm when
// there is one: tests that write many pool images run much faster on
// tmpfs, where msync has no disk to wait for.
func fastTempDir(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "pmemgo-test-*"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}
