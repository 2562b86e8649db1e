package main

import (
	"testing"
	"time"
	"path/filepath"

	"github.com/pmemgo/pmemgo/heap"
)

func TestZZProf(t *testing.T) {
	path := filepath.Join("/var/tmp", "zz.pool")
	defer func() { _ = removeFile(path) }()
	h, err := heap.Open(path, &heap.Options{Size: demoPoolSize})
	if err != nil { t.Fatal(err) }
	plan := newDemoPlan(3000)
	var reg *Registry
	t0 := time.Now()
	h.Update(func(tx *heap.Tx) error { var err error; reg, err = allocDemo(tx, plan); return err })
	t.Log("alloc", time.Since(t0))
	for lo := 0; lo < 3000; lo += demoBatch {
		t0 = time.Now()
		hi := min(lo+demoBatch, 3000)
		if err := h.Update(func(tx *heap.Tx) error { return linkDemo(tx, plan, reg, lo, hi) }); err != nil { t.Fatal(err) }
		t.Log("link", time.Since(t0))
	}
	h.Close()
}
