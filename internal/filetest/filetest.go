// Package filetest holds helpers for tests that damage files on purpose.
package filetest

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// FlipByte inverts the bits of the byte at off in the file at path, in
// place, as a bit rot or a tampering would.
func FlipByte(tb testing.TB, path string, off int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(tb, err)
	defer f.Close()
	var b [1]byte
	_, err = f.ReadAt(b[:], off)
	require.NoError(tb, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b[:], off)
	require.NoError(tb, err)
}
