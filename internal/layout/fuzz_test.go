package layout

import (
	"errors"
	"testing"
)

// The fuzz targets feed arbitrary bytes to every decoder of on-media
// bytes. A decoder may refuse its input but must never panic, and what it
// accepts must be consistent.

func validHeader(t testing.TB) Header {
	h, err := NewHeader(Geometry{Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h.Base = 0x7f0000000000
	return h
}

func FuzzDecodeHeader(f *testing.F) {
	h := validHeader(f)
	b := make([]byte, HeaderBytes)
	h.Encode(b)
	f.Add(b)
	h.Flags, h.Old, h.Target, h.SwizzleGen = FlagSwizzling, []uint64{0x7f0000000000}, 0x7e0000000000, 3
	b2 := make([]byte, HeaderBytes)
	h.Encode(b2)
	f.Add(b2)
	f.Add(b[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("decoded header does not validate: %v", err)
		}
		out := make([]byte, HeaderBytes)
		h.Encode(out)
		if h2, err := DecodeHeader(out); err != nil || h2.Seq != h.Seq || h2.Size != h.Size {
			t.Fatalf("re-encoded header: %v", err)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	h := validHeader(f)
	b := make([]byte, StateSize)
	s := State{Types: 3, TypeBytes: 300, RootOff: h.SlabOff + 64, RootType: 2, SlabHigh: 5}
	s.Encode(b)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < StateSize {
			return
		}
		s, err := DecodeState(b, &h)
		if err != nil {
			return
		}
		if uint64(s.SlabHigh) > h.Slabs || s.TypeBytes > h.TypeSize {
			t.Fatalf("accepted out-of-range state %+v", s)
		}
	})
}

func FuzzDecodeSlabHeader(f *testing.F) {
	const slabSize = 64 << 10
	b := make([]byte, 2*slabSize)
	slots, off := SlabGeometry(slabSize, 64)
	sh := SlabHeader{Kind: KindObjects, Type: 1, SlotSize: 64, Slots: slots, DataOff: off, Extent: 1, Elems: 1, Gen: 2}
	EncodeSlabHeader(b, &sh)
	f.Add(b[:slabSize], uint64(slabSize))
	f.Add(make([]byte, slabSize), uint64(slabSize))
	f.Fuzz(func(t *testing.T, b []byte, span uint64) {
		if len(b) < SlabHeaderSize || span > uint64(len(b)) {
			return
		}
		// The caller always hands a slab the bytes up to the end of the
		// region; limit span to what b holds, rounded to slabs.
		sh, err := DecodeSlabHeader(b, span, MinSlabSize)
		if err != nil || sh.Kind == KindFree {
			return
		}
		if uint64(sh.DataOff)+uint64(sh.Slots)*uint64(sh.SlotSize) > uint64(sh.Extent)*MinSlabSize {
			t.Fatalf("accepted slots past the extent: %+v", sh)
		}
		_ = Bitmap(b, sh.Slots)
	})
}

func FuzzScanLog(f *testing.F) {
	log := make([]byte, 4096)
	InitLog(log)
	p, _ := LogHalf(uint64(len(log)), 1)
	p += PutLogEntry(log[p:], 1, 9000, []byte("old bytes of a range"))
	p += PutLogEntry(log[p:], 1, 12000, make([]byte, 64))
	mem := make([]byte, 1<<20)
	PutCommitRecord(log[p:], 1, 2, []CommitRange{{Off: 9000, Len: 20}, {Off: 12000, Len: 64}}, mem)
	f.Add(log)
	f.Add(log[:LogEntriesOff+10])
	redo := make([]byte, 4096)
	InitLog(redo)
	q, _ := LogHalf(uint64(len(redo)), 1)
	q += PutLogEntry(redo[q:], 1, 9000, []byte("old bytes of a range"))
	copy(mem[12000:], "new content carried by the record")
	PutRedoRecord(redo[q:], 1, 1, []CommitRange{{Off: 9000, Len: 20}, {Off: 12000, Len: 33, Redo: true}}, mem)
	f.Add(redo)
	f.Fuzz(func(t *testing.T, log []byte) {
		if len(log) < LogEntriesOff {
			return
		}
		entries, commit, err := ScanLog(log, 8192, 1<<20)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Off < 8192 || e.Off+uint64(len(e.Old)) > 1<<20 {
				t.Fatalf("entry outside the bounds: %d+%d", e.Off, len(e.Old))
			}
		}
		if commit != nil {
			commit.Holds(mem)
			commit.Stray(mem)
			for _, r := range commit.Apply(make([]byte, 1<<20)) {
				if r.Off < 8192 || r.Off+r.Len > 1<<20 || uint64(len(r.Data)) != r.Len {
					t.Fatalf("redo range outside the bounds or of the wrong size: %d+%d (%d bytes)", r.Off, r.Len, len(r.Data))
				}
			}
		}
	})
}

func FuzzDecodeTypeTable(f *testing.F) {
	d := TypeDesc{Name: "main.T", Size: 16, Align: 8,
		Fields: []Field{{Path: "P", Offset: 0, Size: 8, Type: "*main.T"}, {Path: "N", Offset: 8, Size: 8, Type: "uint64"}},
		Ptrs:   []Pointer{{Offset: 0, Kind: PtrObject, Target: "main.T", Field: "P"}},
	}
	d.Hash = d.ComputeHash()
	payload, err := d.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	table := make([]byte, TypeEntrySize(len(payload)))
	EncodeTypeEntry(table, payload)
	f.Add(table, uint32(1))
	f.Add(table[:20], uint32(1))
	f.Fuzz(func(t *testing.T, table []byte, count uint32) {
		descs, err := DecodeTypeTable(table, count%64, 0)
		if err != nil {
			return
		}
		if len(descs) != int(count%64) {
			t.Fatalf("%d descriptors for a count of %d", len(descs), count%64)
		}
	})
}

func FuzzDecodeSummary(f *testing.F) {
	h := validHeader(f)
	slots, off := SlabGeometry(h.SlabSize, 64)
	bigSlots, bigOff := SlabGeometry(2*h.SlabSize, uint32(h.SlabSize))
	s := Summary{LogGen: 7, HeaderSeq: 9, Slabs: []SlabHeader{
		{Kind: KindObjects, Type: 1, SlotSize: 64, Slots: slots, Used: 3, DataOff: off, Extent: 1, Elems: 1},
		{},
		{Kind: KindArray, Type: 2, SlotSize: uint32(h.SlabSize), Slots: bigSlots, Used: 1, DataOff: bigOff, Extent: 2, Elems: 8},
		{},
	}}
	b := make([]byte, SummarySize(uint64(len(s.Slabs))))
	n, err := EncodeSummary(b, &s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:n])
	f.Add(b[:n-SummaryEntrySize])
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < SummaryHeaderSize {
			return
		}
		got, err := DecodeSummary(b, &h)
		if err != nil {
			return
		}
		if uint64(len(got.Slabs)) > h.Slabs {
			t.Fatalf("accepted %d entries for %d slabs", len(got.Slabs), h.Slabs)
		}
		end := 0
		for i, sh := range got.Slabs {
			if sh.Kind == KindFree {
				continue
			}
			if i < end || i+int(sh.Extent) > len(got.Slabs) || sh.Used > sh.Slots {
				t.Fatalf("accepted entry %d %+v (previous extent ends at %d, %d entries)", i, sh, end, len(got.Slabs))
			}
			end = i + int(sh.Extent)
		}
		out := make([]byte, SummarySize(uint64(len(got.Slabs))))
		if _, err := EncodeSummary(out, &got); errors.Is(err, ErrSummaryTooBig) {
			return // many shapes in few slabs: the pool is closed without a summary
		} else if err != nil {
			t.Fatalf("re-encoding an accepted summary: %v", err)
		}
		again, err := DecodeSummary(out, &h)
		if err != nil || again.LogGen != got.LogGen || again.HeaderSeq != got.HeaderSeq || len(again.Slabs) != len(got.Slabs) {
			t.Fatalf("re-encoded summary: %v", err)
		}
		for i := range got.Slabs {
			if again.Slabs[i] != got.Slabs[i] {
				t.Fatalf("entry %d changed in a round trip: %+v, %+v", i, got.Slabs[i], again.Slabs[i])
			}
		}
	})
}

func TestRedoRecordRoundTrip(t *testing.T) {
	log := make([]byte, 8192)
	InitLog(log)
	p, _ := LogHalf(uint64(len(log)), 1)
	p += PutLogEntry(log[p:], 1, 9000, []byte("old"))
	mem := make([]byte, 1<<16)
	copy(mem[9000:], "new!")
	copy(mem[20000:], "a large range, made durable before the record")
	ranges := []CommitRange{{Off: 9000, Len: 4, Redo: true}, {Off: 20000, Len: 45}}
	PutRedoRecord(log[p:], 1, 1, ranges, mem)

	entries, c, err := ScanLog(log, 64, uint64(len(mem)))
	if err != nil || c == nil || !c.Redo || len(entries) != 1 || len(c.Ranges) != 2 {
		t.Fatalf("scan: entries %d, commit %+v, err %v", len(entries), c, err)
	}
	if string(c.Ranges[0].Data) != "new!" || c.Ranges[1].Data != nil {
		t.Fatalf("ranges decoded as %+v", c.Ranges)
	}
	// A store after the commit makes the range stray, yet the record is
	// still kept, and Apply restores the committed content.
	copy(mem[9000:], "oops")
	copy(mem[20000:], "X")
	if !c.Keeps(1, mem) || c.Keeps(2, mem) {
		t.Fatal("a complete redo record must be kept whatever the ranges hold")
	}
	if st := c.Stray(mem); len(st) != 2 {
		t.Fatalf("stray ranges %+v, want both", st)
	}
	c.Apply(mem)
	if string(mem[9000:9004]) != "new!" {
		t.Fatalf("apply left %q", mem[9000:9004])
	}
	// A record torn anywhere fails its checksum and is not a commit.
	for i := p; i < p+RedoRecordSize(ranges); i += 8 {
		torn := append([]byte(nil), log...)
		torn[i] ^= 1
		if _, c, err := ScanLog(torn, 64, uint64(len(mem))); err == nil && c != nil {
			t.Fatalf("record with byte %d flipped decoded as a commit", i-p)
		}
	}
}
