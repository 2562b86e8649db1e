package heap

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBackupYieldsToWriters backs up a pool of several copy chunks: idle,
// the backup never pauses; while a writer commits, it pauses after chunks
// during which commits were made, each time a positive pause;
// with BackupOptions.FullSpeed it does not pause.
func TestBackupYieldsToWriters(t *testing.T) {
	const chunks = 3
	dir := t.TempDir()
	h, err := Open(filepath.Join(dir, "p.pool"), &Options{Size: chunks * copyChunkSize})
	require.NoError(t, err)
	defer h.Close()
	type counter struct{ N uint64 }
	bump := func() error {
		return h.Update(func(tx *Tx) error {
			c, err := Root[counter](tx)
			if err != nil {
				return err
			}
			return Set(tx, &c.N, c.N+1)
		})
	}
	require.NoError(t, bump())
	// underWriter backs up to name while a writer commits.
	underWriter := func(name string) error {
		var done atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				if err := bump(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		err := h.Backup(filepath.Join(dir, name))
		done.Store(true)
		wg.Wait()
		return err
	}

	var pauses []time.Duration
	backupPause = func(d time.Duration) { pauses = append(pauses, d) }
	defer func() { backupPause = time.Sleep }()

	require.NoError(t, h.Backup(filepath.Join(dir, "idle.pool")))
	require.Empty(t, pauses, "a backup of an idle pool pauses")

	require.NoError(t, underWriter("busy.pool"))
	require.NotEmpty(t, pauses, "a backup under a writer never paused")
	require.LessOrEqual(t, len(pauses), chunks)
	for _, d := range pauses {
		require.Positive(t, d)
	}

	h.SetBackupOptions(BackupOptions{FullSpeed: true})
	pauses = nil
	require.NoError(t, underWriter("full.pool"))
	require.Empty(t, pauses, "a full-speed backup paused")
}
