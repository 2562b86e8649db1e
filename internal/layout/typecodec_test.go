package layout

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sampleTypeDesc describes
//
//	type Node struct {
//		Key  uint64
//		Name string
//		Next *Node
//		Tags []uint32
//		Raw  unsafe.Pointer
//	}
//
// as slab.Describe would, with one pointer of each kind.
func sampleTypeDesc() *TypeDesc {
	d := &TypeDesc{
		Name:  "main.Node",
		Size:  64,
		Align: 8,
		Fields: []Field{
			{Path: "Key", Offset: 0, Size: 8, Type: "uint64"},
			{Path: "Name", Offset: 8, Size: 16, Type: "string"},
			{Path: "Next", Offset: 24, Size: 8, Type: "*main.Node"},
			{Path: "Tags", Offset: 32, Size: 24, Type: "[]uint32"},
			{Path: "Raw", Offset: 56, Size: 8, Type: "unsafe.Pointer"},
		},
		Ptrs: []Pointer{
			{Offset: 8, Kind: PtrString, Target: "uint8", Field: "Name"},
			{Offset: 24, Kind: PtrObject, Target: "main.Node", Field: "Next"},
			{Offset: 32, Kind: PtrSlice, Target: "uint32", Field: "Tags"},
			{Offset: 56, Kind: PtrUnsafe, Field: "Raw"},
		},
	}
	d.Hash = d.ComputeHash()
	return d
}

func TestTypeDescSampleRoundTrip(t *testing.T) {
	d := sampleTypeDesc()
	b, err := d.MarshalBinary()
	require.NoError(t, err)
	var got TypeDesc
	require.NoError(t, got.UnmarshalBinary(b))
	assert.Equal(t, *d, got)
}

// TestTypeDescSeedCorpus checks that the descriptor checked in as a fuzz
// seed still decodes, so that a change to the encoding that would make
// existing pools unreadable fails here rather than in the field.
func TestTypeDescSeedCorpus(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzTypeDescUnmarshal", "valid_node"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 2)
	lit, ok := strings.CutPrefix(lines[1], "[]byte(")
	require.True(t, ok, "seed is a []byte literal")
	s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	require.NoError(t, err)

	var d TypeDesc
	require.NoError(t, d.UnmarshalBinary([]byte(s)))
	assert.Equal(t, "main.Node", d.Name)
	assert.Len(t, d.Ptrs, 8)
}

func FuzzTypeDescUnmarshal(f *testing.F) {
	b, err := sampleTypeDesc().MarshalBinary()
	require.NoError(f, err)
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		checkTypeDescDecode(t, in)
		// Almost every mutation breaks the trailing hash, which would stop
		// the fuzzer at the hash check; decoding a copy with the hash
		// fixed up lets it reach the validation behind it.
		if len(in) >= typeDescHashLen {
			fixed := slices.Clone(in)
			body := fixed[:len(fixed)-typeDescHashLen]
			binary.LittleEndian.PutUint64(fixed[len(body):], xxhash.Sum64(body))
			checkTypeDescDecode(t, fixed)
		}
	})
}

// checkTypeDescDecode decodes in and, if that succeeds, checks that the
// descriptor encodes back to the same bytes.
func checkTypeDescDecode(t *testing.T, in []byte) {
	var d TypeDesc
	if d.UnmarshalBinary(in) != nil {
		return
	}
	out, err := d.MarshalBinary()
	require.NoError(t, err, "a decoded descriptor must encode")
	// Encodings are canonical, so anything accepted re-encodes to the very
	// same bytes.
	require.Equal(t, in, out)
	var again TypeDesc
	require.NoError(t, again.UnmarshalBinary(out))
	require.Equal(t, d, again)
}
