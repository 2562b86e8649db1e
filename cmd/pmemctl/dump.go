package main

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

type dumpOptions struct {
	typ, object string
	hex, json   bool
	key         keyFlag
}

func newDumpCmd() *cobra.Command {
	var o dumpOptions
	cmd := &cobra.Command{
		Use:   "dump POOL [--type T] [--object ID] [--hex]",
		Short: "Print a pool's objects as JSON, fields named from the stored layout",
		Long: `Dump prints the allocated objects and arrays of the pool as a JSON array,
one element per line, in slab order. Each has an "id", its "offset" in the
pool, its "type" and "kind" (object or array) and its slot "size". An
object's "fields" are named from the layout stored in the pool's type table
and decoded by their stored Go type: integers, floats and bools as numbers
and booleans, strings as their text when their bytes are in the pool,
pointers and unsafe.Pointers as the pool offset they point to (null for
nil), slices as {"data": offset, "len": n, "cap": c}, arrays as JSON
arrays; a field of a type dump cannot decode is shown as {"hex": ...}. An
array slot lists its "elements" (all the slot holds; the slice that refers
to it says how many are in use), or for bytes, as the bytes of strings are
kept, their "text" up to the last non-zero byte.

An object's ID is "slab:slot", the slab it is in (the first of its extent,
counting from 0) and its slot there, as check reports it ("slab 3 object
17" is 3:17). --object also takes a pool offset, in decimal or 0x hex, as
the pointers in the output show them: the object holding that offset is
printed. --type takes a stored type name, with or without its package
("main.Node" or "Node"; "uint8" for the bytes of strings). --hex adds each
object's raw bytes. The output is JSON with or without --json.

The pool is recovered in memory first, as Open would, and never written.`,
		Args: cobra.ExactArgs(1),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) (err error) {
			plain, done, err := o.key.readable(args[0])
			if err != nil {
				return err
			}
			defer done()
			p, err := recovery.OpenReadOnly(plain)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, p.Close()) }()
			return runDump(cmd, p.Pool, o)
		}),
	}
	cmd.Flags().StringVar(&o.typ, "type", "", "dump only objects of this stored type")
	cmd.Flags().StringVar(&o.object, "object", "", `dump only this object: "slab:slot", or a pool offset in it`)
	cmd.Flags().BoolVar(&o.hex, "hex", false, "add each object's raw bytes in hex")
	cmd.Flags().BoolVar(&o.json, "json", false, "accepted for uniformity: dump always prints JSON")
	o.key.add(cmd)
	return cmd
}

func runDump(cmd *cobra.Command, p *recovery.Pool, o dumpOptions) error {
	d := newDumper(p, o.hex)
	keep, err := d.typeFilter(o.typ)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(cmd.OutOrStdout())
	n := 0
	var buf []byte
	emit := func(s recovery.Slot) error {
		if !keep(s.Type) {
			return nil
		}
		sep := ",\n"
		if n == 0 {
			sep = "[\n"
		}
		n++
		var err error
		if buf, err = appendJSON(append(buf[:0], sep...), d.slot(s)); err != nil {
			return err
		}
		_, err = w.Write(buf)
		return err
	}
	if o.object != "" {
		var s recovery.Slot
		if s, err = d.find(o.object); err != nil {
			return err
		}
		err = emit(s)
	} else {
		err = d.all(emit)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		w.WriteString("[")
	}
	w.WriteString("\n]\n")
	return w.Flush()
}

// typeFilter returns a function that keeps the types named name, with or
// without their package qualifiers, and everything when name is empty. A
// name the pool has no type for is a usage error.
func (d *dumper) typeFilter(name string) (func(*layout.TypeDesc) bool, error) {
	if name == "" {
		return func(*layout.TypeDesc) bool { return true }, nil
	}
	match := func(td *layout.TypeDesc) bool {
		return td.Name == name || qualifier.ReplaceAllString(td.Name, "") == name
	}
	var names []string
	for i := range d.img.Types {
		if match(&d.img.Types[i]) {
			return match, nil
		}
		names = append(names, d.img.Types[i].Name)
	}
	return nil, usageError(fmt.Errorf("the pool has no type %q; it has %s", name, strings.Join(names, ", ")))
}

// all calls emit for every allocated slot, in slab order. It shows no
// progress bar: its output is JSON, which a bar would garble on a
// terminal.
func (d *dumper) all(emit func(recovery.Slot) error) error {
	var err error
	d.slabs.Heads(func(i uint32, sh layout.SlabHeader) {
		if err != nil {
			return
		}
		bm := layout.Bitmap(d.img.Mem[d.img.Header.SlabOffset(i):], sh.Slots)
		for k := range sh.Slots {
			if bm[k/8]&(1<<(k%8)) == 0 {
				continue
			}
			if err = emit(d.slotAt(i, &sh, k)); err != nil {
				return
			}
		}
	})
	return err
}

// slotAt describes slot k of slab i.
func (d *dumper) slotAt(i uint32, sh *layout.SlabHeader, k uint32) recovery.Slot {
	return recovery.Slot{
		Slab: i, Index: k, Off: d.img.Header.SlabOffset(i) + uint64(sh.DataOff) + uint64(k)*uint64(sh.SlotSize),
		Size: sh.SlotSize, Kind: sh.Kind, Elems: sh.Elems, Type: &d.img.Types[sh.Type-1],
	}
}

// find returns the allocated slot an --object argument names: an ID
// "slab:slot" or a pool offset inside the slot.
func (d *dumper) find(arg string) (recovery.Slot, error) {
	slab, slot, isID := strings.Cut(arg, ":")
	if !isID {
		off, err := strconv.ParseUint(arg, 0, 64)
		if err != nil {
			return recovery.Slot{}, usageError(fmt.Errorf("--object %q is neither an ID slab:slot nor a pool offset", arg))
		}
		loc, err := d.slabs.Locate(d.img.Mem, off)
		if err != nil || !loc.Allocated {
			return recovery.Slot{}, usageError(fmt.Errorf("no allocated object holds pool offset %d", off))
		}
		return d.slotAt(loc.Index, &loc.Slab, loc.Slot), nil
	}
	i, err1 := strconv.ParseUint(slab, 10, 32)
	k, err2 := strconv.ParseUint(slot, 10, 32)
	if err1 != nil || err2 != nil {
		return recovery.Slot{}, usageError(fmt.Errorf("--object %q: an ID is two numbers, slab:slot", arg))
	}
	var found *recovery.Slot
	d.slabs.Heads(func(idx uint32, sh layout.SlabHeader) {
		if uint64(idx) != i || k >= uint64(sh.Slots) {
			return
		}
		if bm := layout.Bitmap(d.img.Mem[d.img.Header.SlabOffset(idx):], sh.Slots); bm[k/8]&(1<<(k%8)) != 0 {
			s := d.slotAt(idx, &sh, uint32(k))
			found = &s
		}
	})
	if found == nil {
		return recovery.Slot{}, usageError(fmt.Errorf("no allocated object %s", arg))
	}
	return *found, nil
}
