package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Key and Value are the fixed sizes of every workload: 16-byte keys and
// 100-byte values.
type (
	Key   = [16]byte
	Value = [100]byte
)

// Engine is one store under test. Every write it acknowledges is durable
// (except for the in-memory ceilings, which say so).
type Engine interface {
	// Open opens or creates the store in dir, sized for about keys keys.
	Open(dir string, keys int) error
	Put(k *Key, v *Value) error
	// Get copies the value of k into v.
	Get(k *Key, v *Value) (bool, error)
	// Update reads k's value, lets f change it and writes it back, in one
	// transaction where the engine has them.
	Update(k *Key, f func(v *Value)) error
	Delete(k *Key) error
	// Scan visits up to n keys from k in order and returns how many.
	Scan(k *Key, n int) (int, error)
	Close() error
}

// engineSpec describes an engine for the runner.
type engineSpec struct {
	name string
	// ordered engines can Scan; durable ones persist each write.
	ordered, durable bool
	// writers is the number of goroutines that share a pure-write phase:
	// bbolt's Batch only coalesces concurrent writes. An engine with more
	// than one runs only the pure-write workloads: alone in a batch, a
	// write waits for the batch delay.
	writers int
	new     func() Engine
}

var engines = []engineSpec{
	{name: "pmemgo-btree", ordered: true, durable: true, writers: 1, new: func() Engine { return &pmemBTree{} }},
	{name: "pmemgo-hash", durable: true, writers: 1, new: func() Engine { return &pmemHash{} }},
	{name: "pmemgo-btree-buffered", ordered: true, durable: true, writers: 1, new: func() Engine { return &pmemBTree{pmemEngine: pmemEngine{buffered: true}} }},
	{name: "pmemgo-btree-dax", ordered: true, durable: true, writers: 1, new: func() Engine { return &pmemBTree{pmemEngine: pmemEngine{dax: true}} }},
	{name: "bbolt", ordered: true, durable: true, writers: 1, new: func() Engine { return &boltEngine{} }},
	{name: "bbolt-batch", ordered: true, durable: true, writers: batchWriters, new: func() Engine { return &boltEngine{batch: true} }},
	{name: "pebble", ordered: true, durable: true, writers: 1, new: func() Engine { return &pebbleEngine{} }},
	{name: "go-map", writers: 1, new: func() Engine { return &goMap{} }},
	{name: "google-btree", ordered: true, writers: 1, new: func() Engine { return &googleBTree{} }},
}

// Engines returns the names of the engines, in the order they run.
func Engines() []string {
	names := make([]string, len(engines))
	for i, e := range engines {
		names[i] = e.name
	}
	return names
}

func engineByName(name string) (engineSpec, error) {
	for _, e := range engines {
		if e.name == name {
			return e, nil
		}
	}
	return engineSpec{}, fmt.Errorf("bench: no engine %q (engines: %s)", name, strings.Join(Engines(), ", "))
}

// diskBytes is what the files under dir occupy: allocated blocks, so that
// a sparse pool file counts only the pages it uses.
func diskBytes(dir string) (int64, error) {
	var total int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			total += allocated(fi)
		}
		return nil
	})
	return total, err
}

// percentile returns the p-th percentile of sorted durations.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func sortInt64(s []int64) { sort.Slice(s, func(i, j int) bool { return s[i] < s[j] }) }
