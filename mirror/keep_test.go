package mirror_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// bankAccounts is how many accounts the transfer workload moves money
// between; each has its own line.
const bankAccounts = 32

type bankAccount struct {
	Balance int64
	Pad     [7]int64
}

// bankRoot holds the number of the last commit in a line of its own and
// the accounts: a replica holding a mix of two commits shows either a sum
// that is off or balances that are not those of the commit it names.
type bankRoot struct {
	Seq      uint64
	Pad      [7]uint64
	Accounts []bankAccount
}

// bank is the transfer workload and the balances after each commit.
type bank struct {
	h            *heap.Heap
	seqOff, accs int64 // pool offsets of Seq and of the accounts
	mu           sync.Mutex
	states       [][bankAccounts]int64 // balances after commit i
	checked      int
	errs         []error
}

func openBank(t *testing.T) *bank {
	h := openPrimary(t, fastDir(t))
	t.Cleanup(func() { h.Close() })
	var root *bankRoot
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[bankRoot](tx)
		if err != nil {
			return err
		}
		if err := heap.Add(tx, r); err != nil {
			return err
		}
		if r.Accounts, err = heap.MakeSlice[bankAccount](tx, bankAccounts, bankAccounts); err != nil {
			return err
		}
		for i := range r.Accounts {
			r.Accounts[i].Balance = 100
		}
		root = r
		return nil
	}))
	base := uintptr(unsafe.Pointer(&h.Device().Bytes()[0]))
	b := &bank{h: h, seqOff: int64(uintptr(unsafe.Pointer(&root.Seq)) - base),
		accs: int64(uintptr(unsafe.Pointer(&root.Accounts[0])) - base)}
	var first [bankAccounts]int64
	for i := range first {
		first[i] = 100
	}
	b.states = append(b.states, first)
	return b
}

// transfer makes the next commit: an amount moves between two accounts.
// Its balances are recorded before it commits, as a replica may apply it
// before Update returns.
func (b *bank) transfer(t *testing.T, r *rand.Rand) {
	b.mu.Lock()
	seq := uint64(len(b.states))
	next := b.states[seq-1]
	from, to, amount := r.IntN(bankAccounts), r.IntN(bankAccounts), int64(r.IntN(10))
	next[from] -= amount
	next[to] += amount
	b.states = append(b.states, next)
	b.mu.Unlock()
	require.NoError(t, b.h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[bankRoot](tx)
		if err != nil {
			return err
		}
		a, c := &root.Accounts[from], &root.Accounts[to]
		if err := heap.Add(tx, &root.Seq); err != nil {
			return err
		}
		if err := heap.AddAll(tx, a, c); err != nil {
			return err
		}
		root.Seq = seq
		a.Balance -= amount
		c.Balance += amount
		return nil
	}))
}

// batches returns how many batches the replica applied.
func (b *bank) batches() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.checked
}

// applied checks a replica's pool after it applied a batch: the sum
// holds, and the balances are those after the commit it names.
func (b *bank) applied(seq uint64, mem []byte) {
	c := binary.LittleEndian.Uint64(mem[b.seqOff:])
	var got [bankAccounts]int64
	sum := int64(0)
	for i := range got {
		got[i] = int64(binary.LittleEndian.Uint64(mem[b.accs+int64(i)*64:]))
		sum += got[i]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checked++
	switch {
	case sum != 100*bankAccounts:
		b.errs = append(b.errs, fmt.Errorf("batch %d (commit %d): the balances sum to %d", seq, c, sum))
	case c >= uint64(len(b.states)):
		b.errs = append(b.errs, fmt.Errorf("batch %d: commit %d was not made", seq, c))
	case got != b.states[c]:
		b.errs = append(b.errs, fmt.Errorf("batch %d: balances %v are not those of commit %d, %v", seq, got, c, b.states[c]))
	}
}

// TestAsyncKeepsLines runs the transfer workload at full speed through an
// async mirror whose batches are read by the sender after later commits
// began, and checks every batch the replica applies: the state of one
// recorded commit. With a small KeepBytes, batches are also read on the
// committing goroutine when the bound is reached; with retention off,
// every batch is read at its commit boundary.
func TestAsyncKeepsLines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		keep   int64
		metric string // the counter that must move
	}{
		{"kept", 16 << 20, "pmemgo_mirror_kept_lines_total"},
		{"bound", 128, "pmemgo_mirror_keep_fallbacks_total"},
		{"off", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fastDir(t)
			srv, err := mirror.NewServer(secureServer(t, mirror.ServerOptions{Dir: dir, Logger: testLogger(t)}))
			require.NoError(t, err)
			b := openBank(t)
			mirror.SetAppliedHook(srv, b.applied)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			go srv.Serve(l)
			defer srv.Close()
			reg := prometheus.NewRegistry()
			m, err := mirror.Start(b.h, secure(t, mirror.Options{
				Replicas: []string{l.Addr().String()}, Mode: mirror.Async, KeepBytes: tc.keep,
				Metrics: reg, Logger: testLogger(t),
			}))
			require.NoError(t, err)
			flush(t, m)

			// Commits go on until the path under test was taken several
			// times, within a bounded number of commits.
			r := rand.New(rand.NewPCG(1, 2))
			commits := 0
			for commits < 50000 {
				b.transfer(t, r)
				commits++
				if commits >= 1000 && commits%100 == 0 && b.batches() >= 20 && (tc.metric == "" || counter(t, reg, tc.metric) >= 5) {
					break
				}
			}
			flush(t, m)
			if tc.metric != "" {
				assert.GreaterOrEqual(t, counter(t, reg, tc.metric), 5.0, "after %d commits", commits)
				assert.Positive(t, counter(t, reg, "pmemgo_mirror_lazy_batches_total"))
			} else {
				assert.Zero(t, counter(t, reg, "pmemgo_mirror_lazy_batches_total"))
			}
			t.Logf("%d commits, metrics %v", commits, counters(t, reg))
			require.NoError(t, m.Close())
			b.mu.Lock()
			assert.Empty(t, b.errs)
			assert.GreaterOrEqual(t, b.checked, 20, "batches checked")
			b.mu.Unlock()

			primary := append([]byte(nil), b.h.Device().Bytes()...)
			require.NoError(t, srv.Close())
			replica, err := os.ReadFile(replicaFile(t, dir))
			require.NoError(t, err)
			requireSameData(t, primary, replica)
		})
	}
}

// counter returns the value of the named counter of reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return counters(t, reg)[name]
}

func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	v := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			if mt.Counter != nil {
				v[mf.GetName()] += mt.Counter.GetValue()
			}
		}
	}
	return v
}
