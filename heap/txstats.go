package heap

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// TxStats counts what the write transactions of this open did.
type TxStats struct {
	// Commits and Rollbacks count Update transactions that committed and
	// that were rolled back (an error, a panic or a failed commit).
	Commits, Rollbacks uint64
	// BytesLogged is what the undo log received: entries and commit
	// records, headers included.
	BytesLogged uint64
	// Fences counts the ordering points (a fence, or an msync) that
	// transactions paid.
	Fences uint64
	// StrayStores counts ranges that a committed transaction wrote and that
	// changed afterwards outside any transaction: a store the application
	// made without Add or Set. Such a store is not guaranteed to persist
	// (after a crash, recovery restores what the transaction committed),
	// but it never undoes the transaction. Each one is logged as a warning.
	StrayStores uint64
}

// txCounters are the counters behind TxStats, changed under the write
// lock. commits is atomic as well, since a backup reads it unlocked to
// tell whether writers are busy (see Snapshot.copyFile).
type txCounters struct {
	commits                   atomic.Uint64
	rollbacks, fences, strays uint64
	// growths counts the growths of the pool in this open.
	growths uint64
}

func (h *Heap) txStats() TxStats {
	c := &h.stats
	return TxStats{Commits: c.commits.Load(), Rollbacks: c.rollbacks, BytesLogged: h.log.logged, Fences: c.fences, StrayStores: c.strays}
}

// fence orders what the transaction flushed so far.
func (h *Heap) fence() error {
	h.stats.fences++
	if err := h.dev.Fence(); err != nil {
		return err
	}
	h.log.unfenced = 0
	return nil
}

// reportStray counts and logs ranges that a store outside a transaction
// changed after the commit that wrote them.
func (h *Heap) reportStray(rs []layout.CommitRange, when string) {
	h.stats.strays += uint64(len(rs))
	var where []string
	for _, r := range rs {
		where = append(where, h.describeRange(r.Off, r.Len))
	}
	h.logger.Warn("pmemgo: memory a committed transaction wrote was changed outside any transaction (a store without Add or Set); the commit stands, the store is not guaranteed to persist",
		"path", h.path, "noticed", when, "ranges", strings.Join(where, "; "))
}

// describeRange names the object a range of the pool lies in.
func (h *Heap) describeRange(off, n uint64) string {
	s, slot, within, ok := h.alloc.lookup(off)
	if !ok || s.sh.Kind == layout.KindFree {
		return fmt.Sprintf("offset %d (+%d bytes)", off, n)
	}
	name := "?"
	if ti := h.types.byID(s.sh.Type); ti != nil {
		name = ti.desc.Name
	}
	return fmt.Sprintf("offset %d (+%d bytes): %s in slab %d slot %d, byte %d", off, n, name, s.idx, slot, within)
}

// retireCommitted retires the log of this open's last commit at Close,
// without the test recovery would make: this process saw the commit's
// fence complete, so its data is durable, and a store made since (which a
// hash test would take for a torn commit) is reported, not rolled back.
func (h *Heap) retireCommitted() error {
	l := &h.log
	if l.committed == nil {
		return nil
	}
	changed := (&layout.Commit{Ranges: l.committed}).Stray(h.mem)
	if len(changed) > 0 {
		h.reportStray(changed, "at close")
	}
	l.committed = nil
	if l.unfenced != 0 {
		// The record is the only durable copy of what the last commit
		// wrote back: that must be durable before it is retired.
		if err := h.fence(); err != nil {
			return err
		}
	}
	return recovery.RetireLog(h.dev, &h.pool.Header)
}

func loggerOf(opts *Options) *slog.Logger {
	if opts.Logger != nil {
		return opts.Logger
	}
	return slog.Default()
}
