package benchutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRemoveStale checks that the directories of a process that exited
// are removed, and those of a live process, or of no process, are kept.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	names := map[string]bool{
		poolDirPrefix + strconv.Itoa(dead.Process.Pid) + "-123": false,
		poolDirPrefix + strconv.Itoa(os.Getpid()) + "-456":      true,
		poolDirPrefix + "789":                                   true,
		"other-" + strconv.Itoa(dead.Process.Pid) + "-1":        true,
	}
	for name := range names {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name, "sub"), 0o755))
	}
	removeStale(dir)
	for name, kept := range names {
		_, err := os.Stat(filepath.Join(dir, name))
		assert.Equal(t, kept, err == nil, name)
	}
}
