package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/google/uuid"
)

// sidecar is what the client keeps beside its backup file (at the
// backup's path with ".remote" appended): who it writes as, whether the
// backup holds the whole region, and which pages the node lacks because
// they were committed while the node did not answer. It is replaced
// durably whenever it changes, before the commit that changed it returns.
type sidecar struct {
	path string
	// Writer identifies this backup to the node.
	Writer WriterID `json:"writer"`
	// Region names the region the backup is a copy of, as NAME; a backup
	// used for another region holds nothing of this one.
	Region string `json:"region"`
	// Complete is set when the backup holds every page of the region as
	// this writer last left it.
	Complete bool `json:"complete"`
	// Stale lists the pages, by index, that the node has not yet been
	// given since they were committed.
	Stale []uint64 `json:"stale,omitempty"`
}

func sidecarPath(backup string) string { return backup + ".remote" }

// loadSidecar reads the sidecar of backup, or makes a new one with a new
// writer identity if there is none.
func loadSidecar(backup string) (*sidecar, error) {
	s := &sidecar{path: sidecarPath(backup)}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		s.Writer = WriterID(uuid.New())
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("backup state %s: %w", s.path, err)
	}
	return s, nil
}

// save replaces the sidecar durably.
func (s *sidecar) save() error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return writeFileSync(s.path, b)
}

// setStale records pages as the set the node lacks.
func (s *sidecar) setStale(pages map[uint64]struct{}) {
	s.Stale = s.Stale[:0]
	for p := range pages {
		s.Stale = append(s.Stale, p)
	}
	sort.Slice(s.Stale, func(i, j int) bool { return s.Stale[i] < s.Stale[j] })
}
