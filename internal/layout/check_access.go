package layout

// DecodeSlabHeaderCounted decodes a slab header as DecodeSlabHeader does,
// except that a used count disagreeing with the bitmap is not an error: it
// returns the header, with the count as stored, and the number of slots the
// bitmap marks, for the caller to compare. Every other check still applies,
// the checksum included, so a header it accepts is one a writer sealed and
// only the agreement of its count with its bitmap is in question. The
// offline checker uses it to report that disagreement apart from other
// damage, and to go on checking the slab's objects by its bitmap.
func DecodeSlabHeaderCounted(b []byte, span, slabSize uint64) (SlabHeader, uint32, error) {
	sh, err := DecodeSlabHeader(b, span, slabSize)
	if err == nil {
		return sh, sh.Used, nil
	}
	// DecodeSlabHeader compares the count last. Decoding a copy whose count
	// is the bitmap's, resealed, tells whether the count was all that was
	// wrong. The copy is made only when the stored checksum holds over a
	// bitmap that fits before the slots, so its size is one a writer chose.
	n := uint64(SlabHeaderSize) + uint64(BitmapBytes(sh.Slots))
	if sh.Slots == 0 || n > uint64(sh.DataOff) || n > uint64(len(b)) ||
		le.Uint64(b[shSum:]) != slabSum(b, sh.Slots) {
		return sh, 0, err
	}
	set := popcount(Bitmap(b, sh.Slots))
	if set == sh.Used {
		return sh, 0, err
	}
	c := make([]byte, n)
	copy(c, b)
	SetSlabUsed(c, set)
	SealSlab(c, sh.Slots)
	if _, cerr := DecodeSlabHeader(c, span, slabSize); cerr != nil {
		return sh, 0, err
	}
	return sh, set, nil
}
