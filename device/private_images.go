package device

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// privateImages maps files, by identity, to the Mapper that serves their
// private mappings instead of Private. count lets Private.Map skip the
// lookup, and the stat it needs, when nothing is registered.
var privateImages struct {
	count atomic.Int32
	mu    sync.Mutex
	m     map[fileID]Mapper
	// byName holds the same Mappers by the absolute name of the file
	// registered, so that opens by that name are found without a stat.
	byName map[string]Mapper
}

// fileID identifies a file whatever path or descriptor it was opened by.
type fileID struct{ dev, ino uint64 }

func idOf(f *os.File) (fileID, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no device and inode number")
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// RegisterPrivate makes Private.Map of the file f, opened by any path or
// descriptor, call m.Map instead of mapping the file, until the returned
// function is called. Opens by f's own name, when it is absolute, are
// recognised without a stat. m must honour Private's contract: the mapping holds
// the file's contents and nothing written to it reaches the file. Crash
// injection uses it so that the checker and read-only opens read its
// in-memory images from mappings it reuses, rather than mapping,
// faulting in and unmapping every image.
func RegisterPrivate(f *os.File, m Mapper) (unregister func(), err error) {
	id, err := idOf(f)
	if err != nil {
		return nil, err
	}
	privateImages.mu.Lock()
	defer privateImages.mu.Unlock()
	if privateImages.m == nil {
		privateImages.m, privateImages.byName = map[fileID]Mapper{}, map[string]Mapper{}
	}
	if _, dup := privateImages.m[id]; dup {
		return nil, errors.New("pmemgo: file already registered")
	}
	name := filepath.Clean(f.Name())
	privateImages.m[id] = m
	if filepath.IsAbs(name) {
		privateImages.byName[name] = m
	}
	privateImages.count.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			privateImages.mu.Lock()
			defer privateImages.mu.Unlock()
			delete(privateImages.m, id)
			delete(privateImages.byName, name)
			privateImages.count.Add(-1)
		})
	}, nil
}

// registeredPrivate returns the Mapper registered for f, if any.
func registeredPrivate(f *os.File) Mapper {
	if privateImages.count.Load() == 0 {
		return nil
	}
	privateImages.mu.Lock()
	m := privateImages.byName[filepath.Clean(f.Name())]
	privateImages.mu.Unlock()
	if m != nil {
		return m
	}
	id, err := idOf(f)
	if err != nil {
		return nil
	}
	privateImages.mu.Lock()
	defer privateImages.mu.Unlock()
	return privateImages.m[id]
}
