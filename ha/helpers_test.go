package ha_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/recovery"
)

// record is one log record, flattened.
type record struct {
	level slog.Level
	text  string
}

// recorder is a slog handler that keeps every record, for tests that
// assert on what was logged, and shows them with -v.
type recorder struct {
	t    testing.TB
	mu   *sync.Mutex
	recs *[]record
	attr string
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, mu: &sync.Mutex{}, recs: &[]record{}}
}

func (r *recorder) logger() *slog.Logger { return slog.New(r) }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message + r.attr)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	*r.recs = append(*r.recs, record{rec.Level, b.String()})
	r.mu.Unlock()
	if testing.Verbose() {
		r.t.Logf("%s %s %s", rec.Time.Format("15:04:05.000"), rec.Level, b.String())
	}
	return nil
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	for _, a := range as {
		c.attr += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &c
}

func (r *recorder) WithGroup(string) slog.Handler { return r }

// logged returns the records at level or above containing text.
func (r *recorder) logged(level slog.Level, text string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range *r.recs {
		if rec.level >= level && strings.Contains(rec.text, text) {
			out = append(out, rec.text)
		}
	}
	return out
}

// startReplica runs a replica server over TLS on a loopback port.
func startReplica(t testing.TB, dir string, log *slog.Logger) (*mirror.Server, string) {
	t.Helper()
	srv, err := mirror.NewServer(mirror.ServerOptions{Dir: dir, Logger: log, TLS: tlstesting.Default(t).ServerConfig()})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv, l.Addr().String()
}

// syncMirror returns the options of a sync mirror to addr over TLS.
func syncMirror(t testing.TB, addr string, log *slog.Logger) mirror.Options {
	return mirror.Options{Replicas: []string{addr}, Mode: mirror.Sync, TLS: tlstesting.Default(t).PrimaryConfig(), Logger: log}
}

// Counter is the workload's root: every commit adds one.
type Counter struct{ N uint64 }

// increment commits N+1 and returns it.
func increment(h *heap.Heap) (uint64, error) {
	var n uint64
	err := h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[Counter](tx)
		if err != nil {
			return err
		}
		n = c.N + 1
		return heap.Set(tx, &c.N, n)
	})
	return n, err
}

// counterOf opens a closed pool and returns its counter, after running
// the offline checker on it.
func counterOf(t testing.TB, path string) uint64 {
	t.Helper()
	return counterWithKey(t, path, nil)
}

// counterWithKey is counterOf for a pool sealed with key, or a plain one
// when key is nil.
func counterWithKey(t testing.TB, path string, key []byte) uint64 {
	t.Helper()
	yield := func(p recovery.Problem) bool {
		t.Errorf("checker: %s: %s", path, p)
		return true
	}
	if key != nil {
		_, err := recovery.CheckSealedFile(path, key, nil, yield)
		require.NoError(t, err)
	} else {
		require.NoError(t, recovery.CheckFile(path, yield))
	}
	return rootOf[Counter](t, path, key).N
}

// rootOf opens the closed pool at path, with key if the pool is sealed,
// and returns a copy of its root.
func rootOf[R any](t testing.TB, path string, key []byte) R {
	t.Helper()
	h, err := heap.Open(path, &heap.Options{Key: key})
	require.NoError(t, err)
	defer h.Close()
	var root R
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[R](tx)
		if err == nil && r == nil {
			err = errors.New("the pool has no root")
		}
		if err == nil {
			root = *r
		}
		return err
	}))
	return root
}

// replicaPool returns the path of the only pool of a replica directory.
func replicaPool(t testing.TB, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.pool"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	return files[0]
}

// fastDir is a directory on tmpfs when there is one.
func fastDir(t testing.TB) string { return benchutil.PoolDir(t) }
