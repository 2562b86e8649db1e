package bench

import (
	"path/filepath"

	"github.com/pmemgo/pmemgo/collections"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

type btreeRoot struct {
	M *collections.BTreeMap[Key, Value]
}

type hashRoot struct {
	M *collections.HashMap[Key, Value]
}

// poolSize leaves room for keys entries in either map, with the undo log
// and slab rounding; the file is sparse, so what is not used costs
// nothing.
func poolSize(keys int) int64 { return 64<<20 + int64(keys)*512 }

// pmemMap is what the two pmemgo maps share.
type pmemMap interface {
	Get(tx *heap.Tx, k Key) (Value, bool)
	Put(tx *heap.Tx, k Key, v Value) error
	Delete(tx *heap.Tx, k Key) (bool, error)
}

// pmemEngine runs each operation in its own transaction: an Update, made
// durable by its commit, per write; a View per read. With dax set the pool
// is mapped by the DAX device even where the directory is not on a DAX
// file system (Force, as PMDK's PMEM_IS_PMEM_FORCE): commits write lines
// back with cache-line instructions and make no system call, which is
// what persistent memory would cost. On tmpfs or a disk this measures the
// instruction path only; such a run makes nothing durable that the page
// cache would not.
type pmemEngine struct {
	h   *heap.Heap
	m   pmemMap
	dax bool
	// buffered maps the pool with device.Buffered instead of the default
	// device (msync on a plain file): one fdatasync per commit.
	buffered bool
}

func (e *pmemEngine) open(dir string, keys int, attach func(tx *heap.Tx) (pmemMap, error)) error {
	opts := &heap.Options{Size: poolSize(keys)}
	switch {
	case e.dax:
		opts.Device = device.Dax{Force: true}
	case e.buffered:
		opts.Device = device.Buffered{}
	}
	h, err := heap.Open(filepath.Join(dir, "map.pool"), opts)
	if err != nil {
		return err
	}
	if err := h.Update(func(tx *heap.Tx) (err error) {
		e.m, err = attach(tx)
		return err
	}); err != nil {
		h.Close()
		return err
	}
	e.h = h
	return nil
}

func (e *pmemEngine) Put(k *Key, v *Value) error {
	return e.h.Update(func(tx *heap.Tx) error { return e.m.Put(tx, *k, *v) })
}

func (e *pmemEngine) Get(k *Key, v *Value) (ok bool, err error) {
	err = e.h.View(func(tx *heap.Tx) error {
		*v, ok = e.m.Get(tx, *k)
		return nil
	})
	return ok, err
}

func (e *pmemEngine) Update(k *Key, f func(v *Value)) error {
	return e.h.Update(func(tx *heap.Tx) error {
		v, _ := e.m.Get(tx, *k)
		f(&v)
		return e.m.Put(tx, *k, v)
	})
}

func (e *pmemEngine) Delete(k *Key) error {
	return e.h.Update(func(tx *heap.Tx) error {
		_, err := e.m.Delete(tx, *k)
		return err
	})
}

func (e *pmemEngine) Close() error { return e.h.Close() }

type pmemBTree struct {
	pmemEngine
	bt *collections.BTreeMap[Key, Value]
}

func (e *pmemBTree) Open(dir string, keys int) error {
	return e.open(dir, keys, func(tx *heap.Tx) (pmemMap, error) {
		r, err := heap.Root[btreeRoot](tx)
		if err != nil {
			return nil, err
		}
		if r.M == nil {
			m, err := collections.NewBTreeMap[Key, Value](tx)
			if err != nil {
				return nil, err
			}
			if err := heap.Set(tx, &r.M, m); err != nil {
				return nil, err
			}
		}
		e.bt = r.M
		return r.M, nil
	})
}

func (e *pmemBTree) Scan(k *Key, n int) (got int, err error) {
	err = e.h.View(func(tx *heap.Tx) error {
		for range e.bt.Seek(tx, *k) {
			if got++; got == n {
				break
			}
		}
		return nil
	})
	return got, err
}

type pmemHash struct{ pmemEngine }

func (e *pmemHash) Open(dir string, keys int) error {
	return e.open(dir, keys, func(tx *heap.Tx) (pmemMap, error) {
		r, err := heap.Root[hashRoot](tx)
		if err != nil {
			return nil, err
		}
		if r.M == nil {
			m, err := collections.NewHashMap[Key, Value](tx)
			if err != nil {
				return nil, err
			}
			if err := heap.Set(tx, &r.M, m); err != nil {
				return nil, err
			}
		}
		return r.M, nil
	})
}

func (e *pmemHash) Scan(*Key, int) (int, error) { return 0, errUnordered }
