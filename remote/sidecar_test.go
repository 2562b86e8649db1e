package remote

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
)

// TestBackupOfAnotherRegionIsNotComplete uses the backup of region a,
// complete and written last by its writer, for region b, which the same
// writer wrote last too: none of b's pages may be served from it.
func TestBackupOfAnotherRegionIsNotComplete(t *testing.T) {
	_, addr := startNode(t, NodeOptions{})
	dir := t.TempDir()
	open := func(name, backup string, size int64) *session {
		s, err := openSession(Scheme+addr+"/"+name, &Options{Backup: filepath.Join(dir, backup), Insecure: true, Size: size})
		require.NoError(t, err)
		return s
	}
	s := open("a", "a.backup", 1<<20)
	assert.True(t, s.side.Complete)
	s.close()
	s = open("a", "a.backup", 0)
	assert.True(t, s.side.Complete, "a's own backup, a's last writer")
	writer := s.side.Writer
	s.close()

	s = open("b", "b.backup", 1<<20)
	s.close()
	// b.backup's sidecar now names a's writer, so b's last writer is a's.
	side, err := loadSidecar(filepath.Join(dir, "b.backup"))
	require.NoError(t, err)
	side.Writer = writer
	require.NoError(t, side.save())
	s = open("b", "b.backup", 0)
	s.close()

	s = open("b", "a.backup", 0)
	assert.False(t, s.side.Complete, "a's backup holds nothing of b")
	s.close()
}

// TestFailedOpenKeepsBackupState uses the complete backup of region a
// for an open of region b that fails once b is claimed (a key given for
// a plain pool): the backup and its state are left as they were.
func TestFailedOpenKeepsBackupState(t *testing.T) {
	_, addr := startNode(t, NodeOptions{})
	dir := t.TempDir()
	backup := filepath.Join(dir, "a.backup")
	for _, name := range []string{"a", "b"} {
		s, err := openSession(Scheme+addr+"/"+name, &Options{Backup: filepath.Join(dir, name+".backup"), Insecure: true, Size: 1 << 20})
		require.NoError(t, err)
		s.close()
	}
	before, err := os.ReadFile(backup)
	require.NoError(t, err)

	opts := &Options{Backup: backup, Insecure: true}
	opts.Heap.Key = make([]byte, 32)
	_, err = openSession(Scheme+addr+"/b", opts)
	require.ErrorIs(t, err, pmemgo.ErrBadKey)
	side, err := loadSidecar(backup)
	require.NoError(t, err)
	assert.Equal(t, "a", side.Region)
	assert.True(t, side.Complete)
	after, err := os.ReadFile(backup)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the backup changed")
}

// TestBackupInUse opens region b with the backup that an open session of
// region a is using: it is refused with ErrBusy before it touches the
// backup or its sidecar, and once that session ends the backup is free.
func TestBackupInUse(t *testing.T) {
	_, addr := startNode(t, NodeOptions{})
	dir := t.TempDir()
	backup := filepath.Join(dir, "a.backup")
	a, err := openSession(Scheme+addr+"/a", &Options{Backup: backup, Insecure: true, Size: 1 << 20})
	require.NoError(t, err)
	before, err := os.ReadFile(backup)
	require.NoError(t, err)
	sideBefore, err := os.ReadFile(sidecarPath(backup))
	require.NoError(t, err)

	_, err = openSession(Scheme+addr+"/b", &Options{Backup: backup, Insecure: true, Size: 2 << 20})
	require.ErrorIs(t, err, ErrBusy)
	assert.ErrorContains(t, err, "in use by another open")
	after, err := os.ReadFile(backup)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the backup changed")
	sideAfter, err := os.ReadFile(sidecarPath(backup))
	require.NoError(t, err)
	assert.Equal(t, sideBefore, sideAfter, "the sidecar changed")

	a.close()
	a, err = openSession(Scheme+addr+"/a", &Options{Backup: backup, Insecure: true})
	require.NoError(t, err, "the backup is free once the session ended")
	a.close()
}
