package device_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

func TestPrivateNeverWritesFile(t *testing.T) {
	cases := []struct {
		name     string
		readOnly bool
	}{
		{"read-write file", false},
		{"read-only file", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFile(t, t.TempDir(), poolSize)
			_, err := f.WriteAt([]byte("before"), 0)
			require.NoError(t, err)
			if tc.readOnly {
				ro, err := openReadOnly(f)
				require.NoError(t, err)
				t.Cleanup(func() { _ = ro.Close() })
				f = ro
			}
			d := mapFile(t, device.Private{}, f, device.MapRequest{})
			assert.Equal(t, []byte("before"), d.Bytes()[:6], "the mapping shows the file")

			copy(d.Bytes()[0:], "after!")
			copy(d.Bytes()[5000:], "more")
			d.Flush(0, poolSize)
			require.NoError(t, d.Fence())
			require.NoError(t, d.Close())

			want := make([]byte, poolSize)
			copy(want, "before")
			assert.Equal(t, want, readFile(t, f))
		})
	}
}

// openReadOnly opens f's file again, read-only.
func openReadOnly(f *os.File) (*os.File, error) {
	return os.OpenFile(f.Name(), os.O_RDONLY, 0)
}

func TestPrivateHintOnReadOnlyFile(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	ro, err := openReadOnly(f)
	require.NoError(t, err)
	defer ro.Close()
	first := mapFile(t, device.Private{}, ro, device.MapRequest{})
	was := addrRange(first).Start
	require.NoError(t, first.Close())

	again := mapFile(t, device.Private{}, ro, device.MapRequest{Hint: was})
	assert.Equal(t, was, addrRange(again).Start)
	copy(again.Bytes(), "writable")
}
