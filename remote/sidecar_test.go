package remote

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
