package slab

import "github.com/pmemgo/pmemgo"

// ErrUnsupportedType is returned by Describe when a Go type cannot be
// stored in a pool: it contains a map, channel, func or interface, or it
// has no size. It is the same value as pmemgo.ErrUnsupportedType, so
// callers can test for either with errors.Is.
var ErrUnsupportedType = pmemgo.ErrUnsupportedType
