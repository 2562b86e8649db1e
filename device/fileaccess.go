package device

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// FileAccess is implemented by a Device whose mapping shares its pages with
// the pool file, so that reading or writing the file at an offset is the
// same as loading or storing at that offset of Bytes. A pass over the whole
// pool can then copy through the kernel instead of touching every page of
// the mapping: under shadow paging (a nested virtual machine) the first
// touch of each page of a new mapping costs microseconds, which populating
// the mapping in advance does not save. Bytes written this way become
// durable like stores: after Flush and Fence.
type FileAccess interface {
	// ReadAt reads len(p) bytes of the pool at off.
	ReadAt(p []byte, off int64) error
	// WriteAt writes p to the pool at off.
	WriteAt(p []byte, off int64) error
}

// fileAccess reads and writes the pool file of a shared mapping of size
// bytes. The size grows with the pool, while a heap snapshot's reader may
// be reading the file: it is atomic.
type fileAccess struct {
	f    *os.File
	size atomic.Int64
}

func (a *fileAccess) check(p []byte, off int64) error {
	if size := a.size.Load(); off < 0 || off > size || int64(len(p)) > size-off {
		return fmt.Errorf("pool file access [%d, +%d) outside the %d mapped bytes", off, len(p), size)
	}
	return nil
}

// ReadAt reads len(p) bytes of the file at off: a short file is an error.
func (a *fileAccess) ReadAt(p []byte, off int64) error {
	if err := a.check(p, off); err != nil {
		return err
	}
	if _, err := a.f.ReadAt(p, off); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read pool file [%d, +%d): %w", off, len(p), err)
	}
	return nil
}

// WriteAt writes p to the file at off.
func (a *fileAccess) WriteAt(p []byte, off int64) error {
	if err := a.check(p, off); err != nil {
		return err
	}
	if _, err := a.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("write pool file [%d, +%d): %w", off, len(p), err)
	}
	return nil
}
