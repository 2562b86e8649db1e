package crashtest_test

import (
	"errors"
	"fmt"

	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

// Small structures, each with one crash-consistency bug of a different
// kind planted behind a flag, and correct without it. planted_bugs_test.go
// runs them with zero Options.

// Tally keeps a count and a running total in one cache line: a commit
// that logs Hits flushes Total's line too.
type Tally struct {
	Hits, Total uint64
}

// tallyWorkload adds 1, 2, 3: Total must stay the sum of 1..Hits. The bug
// stores Total without logging it, next to the logged Hits.
func tallyWorkload(bug bool) crashtest.Workload {
	w := crashtest.Workload{
		Setup: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error { _, err := heap.Root[Tally](tx); return err })
		},
		Check: func(h *heap.Heap, inFlight int) error {
			return h.View(func(tx *heap.Tx) error {
				t, err := heap.Root[Tally](tx)
				if err != nil {
					return err
				}
				if t.Hits != uint64(inFlight) && t.Hits != uint64(inFlight+1) {
					return fmt.Errorf("%d hits during operation %d", t.Hits, inFlight)
				}
				if want := t.Hits * (t.Hits + 1) / 2; t.Total != want {
					return fmt.Errorf("total %d after %d hits, want %d", t.Total, t.Hits, want)
				}
				return nil
			})
		},
	}
	for k := uint64(1); k <= 3; k++ {
		w.Ops = append(w.Ops, crashtest.Op{Name: fmt.Sprintf("hit %d", k), Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				t, err := heap.Root[Tally](tx)
				if err != nil {
					return err
				}
				if err := heap.Set(tx, &t.Hits, t.Hits+1); err != nil {
					return err
				}
				if bug {
					t.Total += k // BUG: not logged; the commit flushes the line anyway
					return nil
				}
				return heap.Set(tx, &t.Total, t.Total+k)
			})
		}})
	}
	return w
}

// Vec is a growable array: Items is replaced by a larger array when full.
type Vec struct {
	Items []uint64
	N     uint64
}

// vecWorkload pushes 1..5 into a Vec of capacity 2, which grows twice.
// The bug swaps in the new array without logging the slice header.
func vecWorkload(bug bool) crashtest.Workload {
	w := crashtest.Workload{
		Setup: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				v, err := heap.Root[Vec](tx)
				if err != nil {
					return err
				}
				v.Items, err = heap.MakeSlice[uint64](tx, 2, 2)
				return err
			})
		},
		Check: func(h *heap.Heap, inFlight int) error {
			return h.View(func(tx *heap.Tx) error {
				v, err := heap.Root[Vec](tx)
				if err != nil {
					return err
				}
				if v.N != uint64(inFlight) && v.N != uint64(inFlight+1) {
					return fmt.Errorf("%d items during push %d", v.N, inFlight+1)
				}
				if v.N > uint64(len(v.Items)) {
					return fmt.Errorf("%d items in an array of %d", v.N, len(v.Items))
				}
				for i := range v.N {
					if v.Items[i] != i+1 {
						return fmt.Errorf("item %d is %d", i, v.Items[i])
					}
				}
				return nil
			})
		},
	}
	for k := uint64(1); k <= 5; k++ {
		w.Ops = append(w.Ops, crashtest.Op{Name: fmt.Sprintf("push %d", k), Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error { return vecPush(tx, k, bug) })
		}})
	}
	return w
}

func vecPush(tx *heap.Tx, x uint64, bug bool) error {
	v, err := heap.Root[Vec](tx)
	if err != nil {
		return err
	}
	if v.N == uint64(len(v.Items)) {
		bigger, err := heap.MakeSlice[uint64](tx, 2*len(v.Items), 2*len(v.Items))
		if err != nil {
			return err
		}
		copy(bigger, v.Items)
		if !bug {
			if err := heap.Add(tx, &v.Items); err != nil {
				return err
			}
		}
		old := v.Items
		v.Items = bigger // BUG when not logged above
		if err := heap.FreeSlice(tx, old); err != nil {
			return err
		}
	}
	if err := heap.Set(tx, &v.Items[v.N], x); err != nil {
		return err
	}
	return heap.Set(tx, &v.N, v.N+1)
}

// Account is updated with everything logged; the bug is in the value the
// last deposit computes, which only the state it leaves shows.
type Account struct {
	Balance, Deposits uint64
}

var deposits = []uint64{10, 20, 30}

func accountWorkload(bug bool) crashtest.Workload {
	w := crashtest.Workload{
		Setup: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error { _, err := heap.Root[Account](tx); return err })
		},
		Check: func(h *heap.Heap, inFlight int) error {
			return h.View(func(tx *heap.Tx) error {
				a, err := heap.Root[Account](tx)
				if err != nil {
					return err
				}
				if a.Deposits != uint64(inFlight) && a.Deposits != uint64(inFlight+1) {
					return fmt.Errorf("%d deposits during deposit %d", a.Deposits, inFlight)
				}
				var want uint64
				for _, d := range deposits[:a.Deposits] {
					want += d
				}
				if a.Balance != want {
					return fmt.Errorf("balance %d after %d deposits, want %d", a.Balance, a.Deposits, want)
				}
				return nil
			})
		},
	}
	for i, d := range deposits {
		w.Ops = append(w.Ops, crashtest.Op{Name: fmt.Sprintf("deposit %d", d), Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				a, err := heap.Root[Account](tx)
				if err != nil {
					return err
				}
				add := d
				if bug && i == len(deposits)-1 {
					add++ // BUG: logged, but wrong
				}
				if err := heap.Set(tx, &a.Balance, a.Balance+add); err != nil {
					return err
				}
				return heap.Set(tx, &a.Deposits, a.Deposits+1)
			})
		}})
	}
	return w
}

// Bag is a list of Items.
type Bag struct {
	First *Item
	N     uint64
}

type Item struct {
	V    uint64
	Next *Item
}

func bagSetup(h *heap.Heap) error {
	return h.Update(func(tx *heap.Tx) error { _, err := heap.Root[Bag](tx); return err })
}

// bagLen returns the items in the bag, checking its count.
func bagLen(h *heap.Heap) (uint64, error) {
	var n uint64
	err := h.View(func(tx *heap.Tx) error {
		b, err := heap.Root[Bag](tx)
		if err != nil {
			return err
		}
		for it := b.First; it != nil; it = it.Next {
			n++
		}
		if n != b.N {
			return fmt.Errorf("count %d, %d items", b.N, n)
		}
		return nil
	})
	return n, err
}

func link(tx *heap.Tx, it *Item) error {
	b, err := heap.Root[Bag](tx)
	if err != nil {
		return err
	}
	if err := heap.Add(tx, b); err != nil {
		return err
	}
	it.Next, b.First = b.First, it
	b.N++
	return nil
}

// bagWorkload adds two items. The bug allocates each in one transaction
// and links it in the next: a crash between them leaks the item.
func bagWorkload(bug bool) crashtest.Workload {
	w := crashtest.Workload{Setup: bagSetup}
	var pending *Item
	var sizes []uint64 // items in the bag after each operation
	for k := uint64(1); k <= 2; k++ {
		if bug {
			w.Ops = append(w.Ops,
				crashtest.Op{Name: fmt.Sprintf("allocate %d", k), Run: func(h *heap.Heap) error {
					return h.Update(func(tx *heap.Tx) (err error) {
						pending, err = heap.New[Item](tx)
						if err == nil {
							pending.V = k
						}
						return err
					})
				}},
				crashtest.Op{Name: fmt.Sprintf("link %d", k), Run: func(h *heap.Heap) error {
					return h.Update(func(tx *heap.Tx) error {
						// The item is older than this transaction: log it.
						if err := heap.Add(tx, pending); err != nil {
							return err
						}
						return link(tx, pending)
					})
				}})
			sizes = append(sizes, k-1, k)
			continue
		}
		w.Ops = append(w.Ops, crashtest.Op{Name: fmt.Sprintf("add %d", k), Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				it, err := heap.New[Item](tx)
				if err != nil {
					return err
				}
				it.V = k
				return link(tx, it)
			})
		}})
		sizes = append(sizes, k)
	}
	w.Check = func(h *heap.Heap, inFlight int) error {
		n, err := bagLen(h)
		if err != nil {
			return err
		}
		before := uint64(0)
		if inFlight > 0 {
			before = sizes[inFlight-1]
		}
		if n != before && n != sizes[inFlight] {
			return fmt.Errorf("%d items during operation %d", n, inFlight)
		}
		return nil
	}
	return w
}

// freeWorkload adds an item and removes it; the bug frees it a second
// time, which the engine refuses.
func freeWorkload(bug bool) crashtest.Workload {
	var removed *Item
	w := crashtest.Workload{
		Setup: bagSetup,
		Ops: []crashtest.Op{
			{Name: "add", Run: func(h *heap.Heap) error {
				return h.Update(func(tx *heap.Tx) error {
					it, err := heap.New[Item](tx)
					if err != nil {
						return err
					}
					return link(tx, it)
				})
			}},
			{Name: "remove", Run: func(h *heap.Heap) error {
				return h.Update(func(tx *heap.Tx) error {
					b, err := heap.Root[Bag](tx)
					if err != nil {
						return err
					}
					removed = b.First
					if err := heap.Add(tx, b); err != nil {
						return err
					}
					b.First, b.N = removed.Next, b.N-1
					return heap.Free(tx, removed)
				})
			}},
		},
		Check: func(h *heap.Heap, inFlight int) error {
			n, err := bagLen(h)
			if err == nil && n > 1 {
				err = fmt.Errorf("%d items", n)
			}
			return err
		},
	}
	if bug {
		w.Ops = append(w.Ops, crashtest.Op{Name: "remove again", Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error { return heap.Free(tx, removed) })
		}})
	}
	return w
}

// errIs reports whether any failure's error wraps target.
func errIs(fs []crashtest.Failure, target error) bool {
	for _, f := range fs {
		if errors.Is(f.Err, target) {
			return true
		}
	}
	return false
}
