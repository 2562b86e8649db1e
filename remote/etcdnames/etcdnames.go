// Package etcdnames keeps the placement of remote pools in etcd, for
// deployments with many memory nodes: each pool's placement (memory node,
// region, size) is the JSON value of a key, and the key's modification
// revision is the placement's epoch. A Manager is a remote.Manager, so
// remote.Open of a bare pool name resolves through it.
package etcdnames

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pmemgo/pmemgo/remote"
)

// DefaultPrefix starts the keys of a Manager with no Prefix.
const DefaultPrefix = "/pmemgo/remote/pools/"

// Manager resolves pool names through etcd.
type Manager struct {
	// Client is the etcd client; the caller owns it.
	Client *clientv3.Client
	// Prefix starts every key; "" means DefaultPrefix.
	Prefix string
}

// Key returns the etcd key that holds the placement of the pool name.
func (m *Manager) Key(name string) string {
	if m.Prefix == "" {
		return DefaultPrefix + name
	}
	return m.Prefix + name
}

// Resolve returns the placement of the pool name, its Epoch the key's
// modification revision. A missing key is remote.ErrNotFound; a value
// that is not a valid placement, remote.ErrProtocol naming the key.
func (m *Manager) Resolve(ctx context.Context, name string) (remote.Placement, error) {
	key := m.Key(name)
	resp, err := m.Client.Get(ctx, key)
	if err != nil {
		return remote.Placement{}, fmt.Errorf("resolve pool %s in etcd: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return remote.Placement{}, fmt.Errorf("pool %s: no placement at etcd key %s: %w", name, key, remote.ErrNotFound)
	}
	var p remote.Placement
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return remote.Placement{}, fmt.Errorf("pool %s: placement at etcd key %s: %v: %w", name, key, err, remote.ErrProtocol)
	}
	if err := p.Check(); err != nil {
		return remote.Placement{}, fmt.Errorf("pool %s: placement at etcd key %s: %w", name, key, err)
	}
	p.Epoch = uint64(resp.Kvs[0].ModRevision)
	return p, nil
}

// Place records p as the placement of the pool name, provided the
// current placement's epoch is prev: zero to create one, or the Epoch a
// Resolve returned to move the pool. It returns the new epoch, or
// remote.ErrMoved if the placement changed (or exists, for prev zero).
// p.Epoch is ignored.
func (m *Manager) Place(ctx context.Context, name string, p remote.Placement, prev uint64) (uint64, error) {
	if err := remote.CheckName(name); err != nil {
		return 0, err
	}
	if err := p.Check(); err != nil {
		return 0, err
	}
	p.Epoch = 0
	b, err := json.Marshal(p)
	if err != nil {
		return 0, err
	}
	key := m.Key(name)
	resp, err := m.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", int64(prev))).
		Then(clientv3.OpPut(key, string(b))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("place pool %s in etcd: %w", name, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("place pool %s at etcd key %s: its epoch is no longer %d: %w", name, key, prev, remote.ErrMoved)
	}
	return uint64(resp.Header.Revision), nil
}

// Remove deletes the placement of the pool name if its epoch is still
// epoch, else returns remote.ErrMoved. The region stays on its node.
func (m *Manager) Remove(ctx context.Context, name string, epoch uint64) error {
	key := m.Key(name)
	resp, err := m.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", int64(epoch))).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("remove pool %s from etcd: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("remove pool %s at etcd key %s: its epoch is no longer %d: %w", name, key, epoch, remote.ErrMoved)
	}
	return nil
}

var _ remote.Manager = (*Manager)(nil)
