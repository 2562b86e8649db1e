package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

func newInfoCmd() *cobra.Command {
	var jsonOut bool
	var rf remoteFlags
	var key keyFlag
	cmd := &cobra.Command{
		Use:   "info POOL",
		Short: "Print a pool's header: format, UUID, size, base, state and whether its checksums hold",
		Long: `Info reads the pool's metadata as it lies in the file, without recovering
or writing anything: the format version, the UUID, the size and geometry,
the base address the stored pointers are relative to, the state (clean, not
closed cleanly, a live undo log, a swizzle in progress) and, for each piece
of checksummed metadata (the two header slots, the heap state, the type
table, the undo log, the slab headers and bitmaps), whether it holds. It
also says which device a read-write open would choose: dax (cache-line
write-backs, no system call per commit) when the file system offers
MAP_SYNC, with the instruction it would use, else msync.

Exit status: 0 when every checksum holds and the file has its recorded size,
2 otherwise, 3 when the file is not a pool or cannot be read.`,
		Args: cobra.ExactArgs(1),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			path, done, err := rf.local(cmd, args[0])
			if err != nil {
				return err
			}
			defer done()
			plain, doneKey, err := key.readable(path)
			if err != nil {
				return err
			}
			defer doneKey()
			info, err := recovery.Inspect(plain)
			if err != nil {
				return err
			}
			r := newInfoResult(args[0], info)
			r.Device, r.Instruction = openDevice(path)
			r.Sealed = plain != path
			if path != args[0] {
				r.Device, r.Instruction = "remote", ""
			}
			out := cmd.OutOrStdout()
			if jsonOut {
				err = writeJSON(out, r)
			} else {
				r.print(out)
			}
			if err != nil {
				return err
			}
			if n := r.failed(); n > 0 {
				return problemsError(fmt.Errorf("%s: %s of %d failed", args[0], plural(n, "check"), len(r.Checks)))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	rf.register(cmd)
	key.add(cmd)
	return cmd
}

// infoResult is what info prints, as --json prints it. Fields that need
// a header slot that decodes are left out when neither does.
type infoResult struct {
	Pool          string        `json:"pool"`
	FormatVersion uint32        `json:"format_version,omitempty"`
	UUID          string        `json:"uuid,omitempty"`
	Size          uint64        `json:"size,omitempty"`
	MaxSize       uint64        `json:"max_size,omitempty"`
	FileSize      int64         `json:"file_size"`
	Base          string        `json:"base,omitempty"`
	Geometry      *infoGeometry `json:"geometry,omitempty"`
	// State lists what Open would have to do, or holds "clean".
	State      []string     `json:"state"`
	Seq        uint64       `json:"seq,omitempty"`
	Epoch      uint64       `json:"epoch"`
	SwizzleGen uint64       `json:"swizzle_gen"`
	Swizzle    *infoSwizzle `json:"swizzle,omitempty"`
	Root       *infoRoot    `json:"root,omitempty"`
	Checks     []infoCheck  `json:"checks"`
	// Device is the device a read-write open would choose (heap's
	// default, device.Auto): "dax" with the write-back instruction it
	// would use, or "msync".
	Device      string `json:"device"`
	Instruction string `json:"instruction,omitempty"`
	// Sealed is set for a sealed (encrypted) pool file, whose records the
	// device writes back.
	Sealed bool `json:"sealed,omitempty"`
}

// openDevice returns the device a read-write open of path would choose by
// default, and its write-back instruction for dax.
func openDevice(path string) (string, string) {
	f, err := os.Open(path)
	if err != nil {
		return "msync", ""
	}
	defer f.Close()
	if device.DaxMappable(f) {
		return "dax", string(device.DaxInstruction())
	}
	return "msync", ""
}

type infoGeometry struct {
	SlabSize   uint64 `json:"slab_size"`
	Slabs      uint64 `json:"slabs"`
	SlabsUsed  uint32 `json:"slabs_initialised"`
	SlabOffset uint64 `json:"slab_offset"`
	TypeOffset uint64 `json:"type_table_offset"`
	TypeSize   uint64 `json:"type_table_size"`
	LogOffset  uint64 `json:"undo_log_offset"`
	LogSize    uint64 `json:"undo_log_size"`
	SumOffset  uint64 `json:"slab_summary_offset"`
	SumSize    uint64 `json:"slab_summary_size"`
}

type infoSwizzle struct {
	Target string   `json:"target"`
	Old    []string `json:"old"`
}

type infoRoot struct {
	Offset uint64 `json:"offset"`
	Type   string `json:"type"`
}

// infoCheck is one piece of metadata and whether it holds.
type infoCheck struct {
	What   string `json:"what"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func newInfoResult(path string, info *recovery.Info) *infoResult {
	r := &infoResult{Pool: path, FileSize: info.FileSize, State: []string{}}
	for i, s := range info.Slots {
		c := infoCheck{What: "header slot " + string(rune('A'+i)), OK: s.Err == nil}
		switch {
		case s.Err != nil:
			c.Detail = s.Err.Error()
		case i == info.Current:
			c.Detail = fmt.Sprintf("sequence %d, in use", s.Header.Seq)
		default:
			c.Detail = fmt.Sprintf("sequence %d", s.Header.Seq)
		}
		r.Checks = append(r.Checks, c)
	}
	if info.Current < 0 {
		r.State = append(r.State, "unreadable: neither header slot holds")
		return r
	}
	h := &info.Header
	r.FormatVersion, r.UUID, r.Size, r.MaxSize, r.Seq = h.Version, uuid.UUID(h.UUID).String(), h.Size, h.MaxSize, h.Seq
	r.Base, r.Epoch, r.SwizzleGen = fmt.Sprintf("%#x", h.Base), h.Epoch, h.SwizzleGen
	r.Geometry = &infoGeometry{
		SlabSize: h.SlabSize, Slabs: h.Slabs, SlabsUsed: info.State.SlabHigh, SlabOffset: h.SlabOff,
		TypeOffset: h.TypeOff, TypeSize: h.TypeSize, LogOffset: h.LogOff, LogSize: h.LogSize,
		SumOffset: h.SumOff, SumSize: h.SumSize,
	}
	if h.Flags&layout.FlagSwizzling != 0 {
		r.Swizzle = &infoSwizzle{Target: fmt.Sprintf("%#x", h.Target), Old: []string{}}
		for _, o := range h.Old {
			r.Swizzle.Old = append(r.Swizzle.Old, fmt.Sprintf("%#x", o))
		}
	}
	if info.StateErr == nil && info.State.RootOff != 0 {
		r.Root = &infoRoot{Offset: info.State.RootOff, Type: typeName(info.Types, info.State.RootType)}
	}
	r.State = infoState(info)
	r.Checks = append(r.Checks, infoChecks(info)...)
	return r
}

// typeName returns the name of type id, or "type <id>" when the table
// does not have it.
func typeName(types []layout.TypeDesc, id uint32) string {
	if id == 0 || int(id) > len(types) {
		return fmt.Sprintf("type %d", id)
	}
	return types[id-1].Name
}

// infoState lists what Open would have to do to the pool.
func infoState(info *recovery.Info) []string {
	var st []string
	h := &info.Header
	if h.Flags&layout.FlagSwizzling != 0 {
		st = append(st, fmt.Sprintf("swizzle in progress to base %#x (generation %d): Open finishes it", h.Target, h.SwizzleGen))
	}
	switch l := info.Log; {
	case l.Err != nil:
	case l.Commit && l.Holds:
		st = append(st, "committed transaction whose undo log is not retired yet: Open keeps it")
	case l.Entries > 0:
		st = append(st, fmt.Sprintf("live undo log of %s: Open rolls the transaction back", plural(l.Entries, "entry")))
	}
	if info.Log.Prev {
		st = append(st, "the commit record of the generation before is live: Open copies it back in place first")
	}
	if info.OpenMark {
		st = append(st, "not closed cleanly")
	}
	if len(st) == 0 {
		st = append(st, "clean")
	}
	return st
}

// infoChecks says whether each piece of metadata past the header slots
// holds.
func infoChecks(info *recovery.Info) []infoCheck {
	h := &info.Header
	var cs []infoCheck
	check := func(what string, err error, detail string) {
		if err != nil {
			detail = err.Error()
		}
		cs = append(cs, infoCheck{What: what, OK: err == nil, Detail: detail})
	}
	var sizeErr error
	sizeDetail := fmt.Sprintf("%d bytes, as recorded", info.FileSize)
	switch fs := uint64(info.FileSize); {
	case fs < h.Size:
		sizeErr = fmt.Errorf("the file is %d bytes, the header records %d", info.FileSize, h.Size)
	case fs > h.Size:
		sizeDetail = fmt.Sprintf("%d bytes, %d more than recorded: a growth was interrupted before its header was written, and the next growth reuses them",
			info.FileSize, fs-h.Size)
	}
	check("file size", sizeErr, sizeDetail)
	st := &info.State
	root := "no root"
	if st.RootOff != 0 {
		root = fmt.Sprintf("root %s at offset %d", typeName(info.Types, st.RootType), st.RootOff)
	}
	check("heap state", info.StateErr, fmt.Sprintf("%s; %d of %d slabs initialised", root, st.SlabHigh, h.Slabs))
	if info.StateErr != nil {
		return cs
	}
	check("type table", info.TypesErr, fmt.Sprintf("%s in %d of %d bytes", plural(len(info.Types), "type"), st.TypeBytes, h.TypeSize))
	l := &info.Log
	logDetail := fmt.Sprintf("generation %d, retired", l.Gen)
	switch {
	case l.Commit && l.Holds:
		logDetail = fmt.Sprintf("generation %d, %s and a commit record that holds", l.Gen, plural(l.Entries, "live entry"))
	case l.Commit:
		logDetail = fmt.Sprintf("generation %d, %s and a commit record that does not hold", l.Gen, plural(l.Entries, "live entry"))
	case l.Entries > 0:
		logDetail = fmt.Sprintf("generation %d, %s", l.Gen, plural(l.Entries, "live entry"))
	}
	if l.Prev {
		if !l.Commit && l.Entries == 0 {
			logDetail = fmt.Sprintf("generation %d, no live entries", l.Gen)
		}
		logDetail += "; the previous generation's commit record is live"
	}
	check("undo log", l.Err, logDetail)
	var slabErr error
	if n := len(info.SlabErrs); n > 0 {
		slabErr = fmt.Errorf("%d of %d fail, the first: %w", n, n+info.Slabs, info.SlabErrs[0])
	}
	check("slab headers", slabErr, fmt.Sprintf("%s with their bitmaps", plural(info.Slabs, "slab header")))
	sum := &info.Summary
	sumDetail := "none: the next clean close writes one"
	switch {
	case sum.Stale != nil:
		sumDetail = "not used by the next open: " + strings.TrimPrefix(sum.Stale.Error(), "slab summary is ")
	case sum.Present:
		sumDetail = fmt.Sprintf("%s; the next open at the pool's base reads it instead of every slab header", plural(sum.Entries, "slab"))
	}
	check("slab summary", sum.Err, sumDetail)
	return cs
}

// maxSizeText describes the maximum size a header records.
func maxSizeText(n uint64) string {
	if n == 0 {
		return "not recorded (made before pools could grow): a read-write open chooses it"
	}
	return fmt.Sprintf("%s (%d bytes): the pool grows up to it", humanBytes(n), n)
}

func (r *infoResult) failed() int {
	n := 0
	for _, c := range r.Checks {
		if !c.OK {
			n++
		}
	}
	return n
}

func (r *infoResult) print(out io.Writer) {
	t := newTable(out)
	row := func(k, v string) { fmt.Fprintf(t, "%s\t%s\n", k, v) }
	row("pool", r.Pool)
	if g := r.Geometry; g != nil {
		row("format", fmt.Sprintf("version %d", r.FormatVersion))
		row("uuid", r.UUID)
		row("size", fmt.Sprintf("%s (%d bytes)", humanBytes(r.Size), r.Size))
		row("max size", maxSizeText(r.MaxSize))
		row("base", r.Base+" (stored pointers are relative to it)")
		row("slabs", fmt.Sprintf("%d of %s at offset %d, %d initialised", g.Slabs, humanBytes(g.SlabSize), g.SlabOffset, g.SlabsUsed))
		row("type table", fmt.Sprintf("%s at offset %d", humanBytes(g.TypeSize), g.TypeOffset))
		row("slab summary", fmt.Sprintf("%s at offset %d", humanBytes(g.SumSize), g.SumOffset))
		row("undo log", fmt.Sprintf("%s at offset %d", humanBytes(g.LogSize), g.LogOffset))
		row("sequence", fmt.Sprintf("%d, epoch %d, swizzle generation %d", r.Seq, r.Epoch, r.SwizzleGen))
	}
	if r.Root != nil {
		row("root", fmt.Sprintf("%s at offset %d", r.Root.Type, r.Root.Offset))
	}
	row("state", strings.Join(r.State, "; "))
	sealed := ""
	if r.Sealed {
		sealed = "sealed (AES-256-GCM records of each line, written back by the device below); "
	}
	switch r.Device {
	case "dax":
		row("device", fmt.Sprintf("%sdax: the file system offers MAP_SYNC, flushes by %s", sealed, r.Instruction))
	case "msync":
		row("device", sealed+"msync: the file system offers no MAP_SYNC (not DAX)")
	case "remote":
		row("device", "remote: read through the memory node; remote.Open pages it in on demand")
	}
	t.Flush()
	fmt.Fprintln(out, "checks:")
	t = newTable(out)
	for _, c := range r.Checks {
		verdict := "ok"
		if !c.OK {
			verdict = "FAILED"
		}
		fmt.Fprintf(t, "  %s\t%s\t%s\n", c.What, verdict, c.Detail)
	}
	t.Flush()
}
