package fsx

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"
)

// TestAllocate reserves the blocks of a sparse file without changing what
// it holds, and extends a short one.
func TestAllocate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("kept"), 1<<20); err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	if err := Allocate(f, size); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Fatalf("size %d after allocating %d bytes", fi.Size(), size)
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks < size {
		t.Fatalf("%d bytes allocated of %d", blocks, size)
	}
	got := make([]byte, 4)
	if _, err := f.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, []byte("kept")) {
		t.Fatalf("read %q, %v: allocating changed the file's bytes", got, err)
	}
	// A smaller allocation leaves the file as long as it was.
	if err := Allocate(f, 4096); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != size {
		t.Fatalf("size %d after allocating less than the file holds", fi.Size())
	}
}

// TestCatchFault stores into a mapping past the end of its shrunk file:
// an error naming the address, not a crash; a fault the caller does not
// own goes on as a panic.
func TestCatchFault(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Allocate(f, 2*4096); err != nil {
		t.Fatal(err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 2*4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	err = CatchFault(nil, func() error { mem[4096] = 1; return nil })
	var fe *FaultError
	if !errors.As(err, &fe) || fe.Addr != uintptr(unsafe.Pointer(&mem[4096])) {
		t.Fatalf("store past the file's end: %v", err)
	}
	if err := CatchFault(nil, func() error { mem[0] = 1; return nil }); err != nil {
		t.Fatalf("store inside the file: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a fault the caller does not own was caught")
		}
	}()
	_ = CatchFault(func(uintptr) bool { return false }, func() error { mem[4096] = 1; return nil })
}
