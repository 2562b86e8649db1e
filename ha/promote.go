package ha

import (
	"context"
	"fmt"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// Promote makes h, a copy of the pool that an operator brought up by hand
// (a replica's file, a backup), the pool's newest incarnation: it wins the
// role (waiting until ctx is done), refuses a copy older than the
// registered incarnation (mirror.ErrStaleEpoch), makes the token the
// copy's epoch and registers it, so that every older copy, the old
// primary's included, is refused whenever it returns. The term is
// returned held: resign it to let the copy's application take the role
// with StartPrimary.
func Promote(ctx context.Context, h *heap.Heap, coord Coordinator, pool, node string) (*Term, error) {
	term, err := coord.Campaign(ctx, Candidate{Pool: pool, Node: node, MinToken: h.Epoch()})
	if err != nil {
		return nil, err
	}
	if err := promote(ctx, h, term); err != nil {
		term.Resign(context.WithoutCancel(ctx))
		return nil, err
	}
	return term, nil
}

func promote(ctx context.Context, h *heap.Heap, term *Term) error {
	if epoch := h.Epoch(); epoch < term.Incarnation {
		return fmt.Errorf("ha: pool %s: epoch %d of %s is older than incarnation %d registered with the coordinator: %w",
			term.Pool, epoch, h.Path(), term.Incarnation, mirror.ErrStaleEpoch)
	}
	if err := h.SetEpoch(term.Token); err != nil {
		return fmt.Errorf("ha: pool %s: %w", term.Pool, err)
	}
	return term.Register(ctx)
}
