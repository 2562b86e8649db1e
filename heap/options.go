package heap

import (
	"errors"
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// check refuses negative sizes. The sizes are checked against the pool
// format only when a pool is created (see geometry): an existing pool
// keeps those it was created with.
func (o *Options) check() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"Size", o.Size}, {"MaxSize", o.MaxSize}, {"SlabSize", o.SlabSize}, {"LogSize", o.LogSize}} {
		if f.v < 0 {
			return fmt.Errorf("Options.%s %d is negative: %w", f.name, f.v, pmemgo.ErrInvalidOptions)
		}
	}
	return o.checkKey()
}

// geometry returns the geometry of a pool created with o, or an error
// naming the option that does not fit the pool format.
func (o *Options) geometry(path string) (layout.Geometry, error) {
	g := layout.Geometry{Size: uint64(o.Size), SlabSize: uint64(o.SlabSize), LogSize: uint64(o.LogSize), MaxSize: uint64(o.MaxSize)}
	if g.MaxSize == 0 {
		g.MaxSize = defaultMaxSize(path, g.Size)
	}
	_, err := layout.NewHeader(g)
	if ge, ok := errors.AsType[*layout.GeometryError](err); ok {
		return g, fmt.Errorf("Options.%s %d %s: %w", ge.Field, ge.Value, ge.Reason, pmemgo.ErrInvalidOptions)
	}
	return g, err
}
