package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/pmemgo/pmemgo"
)

// Manager resolves a pool's name to its placement: the memory node and
// the region there that hold it. Open resolves a bare name (not a
// pmem:// URL) through Options.Manager.
type Manager interface {
	// Resolve returns the placement of the pool name, or an error wrapping
	// ErrNotFound if it has none.
	Resolve(ctx context.Context, name string) (Placement, error)
}

// Placement is where a pool lives.
type Placement struct {
	// Node is the memory node's address, HOST:PORT.
	Node string `json:"node"`
	// Region names the region on the node.
	Region string `json:"region"`
	// Size is the region's size in bytes; zero means not recorded.
	Size uint64 `json:"size,omitempty"`
	// Epoch changes whenever the placement does: the node's incarnation
	// for NodeManager, the key's revision for a manager keeping names in
	// etcd.
	Epoch uint64 `json:"epoch,omitempty"`
}

// Check returns an error naming what is wrong with p.
func (p Placement) Check() error {
	if _, port, err := net.SplitHostPort(p.Node); err != nil || port == "" {
		return fmt.Errorf("placement node %q: want HOST:PORT: %w", p.Node, ErrProtocol)
	}
	return CheckName(p.Region)
}

// URL returns the pmem:// URL of the placement.
func (p Placement) URL() string { return Scheme + p.Node + "/" + p.Region }

// NodeManager is the embedded manager: the memory node at Addr answers
// for its own regions, as it does for a pmem://ADDR/NAME URL.
type NodeManager struct {
	Addr string
	// TLS is the client configuration; nil talks plain TCP.
	TLS *tls.Config
}

// Resolve asks the node for the region name.
func (m NodeManager) Resolve(ctx context.Context, name string) (Placement, error) {
	cl, err := dial(ctx, m.Addr, m.TLS)
	if err != nil {
		return Placement{}, fmt.Errorf("resolve %s: %w", name, err)
	}
	defer cl.close()
	r, epoch, err := cl.resolve(ctx, name, false, WriterID{})
	if err != nil {
		return Placement{}, fmt.Errorf("resolve %s: %w", name, err)
	}
	return Placement{Node: m.Addr, Region: name, Size: r.size, Epoch: epoch}, nil
}

// resolveName turns a bare pool name into the URL of its placement,
// through opts.Manager.
func resolveName(name string, opts *Options) (string, Placement, error) {
	if opts == nil || opts.Manager == nil {
		return "", Placement{}, fmt.Errorf("open %s: not a %s URL, and Options.Manager is nil: %w", name, Scheme, pmemgo.ErrInvalidOptions)
	}
	if strings.Contains(name, "://") {
		return "", Placement{}, fmt.Errorf("open %s: want a %s URL or a pool name: %w", name, Scheme, pmemgo.ErrInvalidOptions)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := opts.Manager.Resolve(ctx, name)
	if nm, ok := opts.Manager.(NodeManager); ok && errors.Is(err, ErrNotFound) && opts.Size > 0 {
		// The node answers for its own regions, the ones to create
		// included.
		p, err = Placement{Node: nm.Addr, Region: name}, nil
	}
	if err != nil {
		return "", p, fmt.Errorf("open %s: %w", name, err)
	}
	if err := p.Check(); err != nil {
		return "", p, fmt.Errorf("open %s: %w", name, err)
	}
	return p.URL(), p, nil
}
