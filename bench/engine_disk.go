package bench

import (
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble"
	bolt "go.etcd.io/bbolt"
)

var bucketName = []byte("bench")

// batchWriters is the number of goroutines that write to bbolt-batch.
const batchWriters = 16

// boltEngine is bbolt with one bucket: one Update (a commit with fsync)
// per write, or, with batch, db.Batch, which coalesces concurrent writers
// into one commit.
type boltEngine struct {
	db    *bolt.DB
	batch bool
}

func (e *boltEngine) Open(dir string, _ int) error {
	db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o600, nil)
	if err != nil {
		return err
	}
	// A batch commits as soon as every writer of the phase is waiting in
	// it, rather than after MaxBatchDelay.
	db.MaxBatchSize = batchWriters
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	}); err != nil {
		db.Close()
		return err
	}
	e.db = db
	return nil
}

func (e *boltEngine) write(fn func(tx *bolt.Tx) error) error {
	if e.batch {
		return e.db.Batch(fn)
	}
	return e.db.Update(fn)
}

func (e *boltEngine) Put(k *Key, v *Value) error {
	return e.write(func(tx *bolt.Tx) error { return tx.Bucket(bucketName).Put(k[:], v[:]) })
}

func (e *boltEngine) Get(k *Key, v *Value) (ok bool, err error) {
	err = e.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketName).Get(k[:]); b != nil {
			copy(v[:], b)
			ok = true
		}
		return nil
	})
	return ok, err
}

func (e *boltEngine) Update(k *Key, f func(v *Value)) error {
	return e.write(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		var v Value
		copy(v[:], b.Get(k[:]))
		f(&v)
		return b.Put(k[:], v[:])
	})
}

func (e *boltEngine) Delete(k *Key) error {
	return e.write(func(tx *bolt.Tx) error { return tx.Bucket(bucketName).Delete(k[:]) })
}

func (e *boltEngine) Scan(k *Key, n int) (got int, err error) {
	err = e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketName).Cursor()
		for key, _ := c.Seek(k[:]); key != nil && got < n; key, _ = c.Next() {
			got++
		}
		return nil
	})
	return got, err
}

func (e *boltEngine) Close() error { return e.db.Close() }

// pebbleEngine is pebble with every write synced (pebble.Sync).
type pebbleEngine struct{ db *pebble.DB }

func (e *pebbleEngine) Open(dir string, _ int) error {
	db, err := pebble.Open(filepath.Join(dir, "pebble"), &pebble.Options{Logger: quietLogger{}})
	e.db = db
	return err
}

func (e *pebbleEngine) Put(k *Key, v *Value) error { return e.db.Set(k[:], v[:], pebble.Sync) }

func (e *pebbleEngine) Get(k *Key, v *Value) (bool, error) {
	b, closer, err := e.db.Get(k[:])
	if err == pebble.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	copy(v[:], b)
	return true, closer.Close()
}

func (e *pebbleEngine) Update(k *Key, f func(v *Value)) error {
	var v Value
	if _, err := e.Get(k, &v); err != nil {
		return err
	}
	f(&v)
	return e.Put(k, &v)
}

func (e *pebbleEngine) Delete(k *Key) error { return e.db.Delete(k[:], pebble.Sync) }

func (e *pebbleEngine) Scan(k *Key, n int) (got int, err error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: k[:]})
	if err != nil {
		return 0, err
	}
	for ok := it.First(); ok && got < n; ok = it.Next() {
		got++
	}
	return got, it.Close()
}

func (e *pebbleEngine) Close() error { return e.db.Close() }

// quietLogger keeps pebble's informational lines off the benchmark output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
