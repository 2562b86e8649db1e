package heap_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// This example creates a pool, links objects in it, closes it and reopens
// it at a new address: the stored pointers are rewritten (swizzled) at
// open, so the program follows them as ordinary Go pointers.
func ExampleOpen() {
	// Persistent types are plain Go types: pointers, strings, slices and
	// arrays are stored; maps, channels, funcs and interfaces are not.
	type Book struct {
		Title string
		Year  int
		Next  *Book
	}
	type Shelf struct {
		First *Book
		Count int
	}

	dir, err := os.MkdirTemp("", "pmemgo-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "books.pool")

	// Open creates the pool, since the file does not exist and Size is set.
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	if err != nil {
		log.Fatal(err)
	}
	addBook := func(title string, year int) error {
		return h.Update(func(tx *heap.Tx) error {
			shelf, err := heap.Root[Shelf](tx) // allocated by the first Update
			if err != nil {
				return err
			}
			b, err := heap.New[Book](tx)
			if err != nil {
				return err
			}
			// b is new in this transaction: it is written directly.
			if b.Title, err = heap.NewString(tx, title); err != nil {
				return err
			}
			b.Year, b.Next = year, shelf.First
			// shelf may predate the transaction: Set logs the old value
			// before storing, so that an abort or a crash restores it.
			if err := heap.Set(tx, &shelf.First, b); err != nil {
				return err
			}
			return heap.Set(tx, &shelf.Count, shelf.Count+1)
		})
	}
	for _, b := range []struct {
		title string
		year  int
	}{{"The C Programming Language", 1978}, {"The Go Programming Language", 2015}} {
		if err := addBook(b.title, b.year); err != nil {
			log.Fatal(err)
		}
	}
	if err := h.Close(); err != nil {
		log.Fatal(err)
	}

	// ForceRelocate maps the pool away from where it was, as a reopen in
	// another process may find it; Open rewrites every stored pointer.
	h, err = heap.Open(path, &heap.Options{ForceRelocate: true})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	fmt.Println("relocated:", h.Recovery().Relocated)
	err = h.View(func(tx *heap.Tx) error {
		shelf, err := heap.Root[Shelf](tx)
		if err != nil {
			return err
		}
		fmt.Println(shelf.Count, "books")
		for b := shelf.First; b != nil; b = b.Next {
			fmt.Println(b.Year, b.Title)
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// relocated: true
	// 2 books
	// 2015 The Go Programming Language
	// 1978 The C Programming Language
}

// When the closure given to Update returns an error, every change it made
// is rolled back, allocations included.
func ExampleHeap_Update() {
	type Counter struct{ N int }

	dir, err := os.MkdirTemp("", "pmemgo-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	h, err := heap.Open(filepath.Join(dir, "counter.pool"), &heap.Options{Size: 8 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()

	increment := func(fail bool) error {
		return h.Update(func(tx *heap.Tx) error {
			c, err := heap.Root[Counter](tx)
			if err != nil {
				return err
			}
			if err := heap.Set(tx, &c.N, c.N+1); err != nil {
				return err
			}
			if fail {
				return errors.New("changed my mind")
			}
			return nil
		})
	}
	fmt.Println(increment(false))
	fmt.Println(increment(true))
	err = h.View(func(tx *heap.Tx) error {
		c, err := heap.Root[Counter](tx)
		if err != nil {
			return err
		}
		fmt.Println("N =", c.N)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// <nil>
	// changed my mind
	// N = 1
}

// A persistent object must point only into the pool: a pointer to ordinary
// Go memory would dangle once the program exits. Commit refuses it and the
// transaction rolls back.
func ExampleHeap_Update_foreignPointer() {
	type Item struct {
		Name string
		Next *Item
	}

	dir, err := os.MkdirTemp("", "pmemgo-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	h, err := heap.Open(filepath.Join(dir, "items.pool"), &heap.Options{Size: 8 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()

	err = h.Update(func(tx *heap.Tx) error {
		it, err := heap.New[Item](tx)
		if err != nil {
			return err
		}
		it.Next = &Item{Name: "on the Go heap"}
		return nil
	})
	fmt.Println(errors.Is(err, pmemgo.ErrForeignPointer))
	// Output:
	// true
}
