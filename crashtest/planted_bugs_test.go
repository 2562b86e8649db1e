package crashtest_test

import (
	"regexp"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// capture runs w with opts (nil for zero Options) and returns what it
// reported, so that tests can assert on failures instead of failing.
func capture(t *testing.T, w crashtest.Workload, opts *crashtest.Options) (crashtest.Summary, []crashtest.Failure) {
	t.Helper()
	var o crashtest.Options
	if opts != nil {
		o = *opts
	}
	var found []crashtest.Failure
	o.Report = func(f crashtest.Failure) { found = append(found, f) }
	o.Logf = t.Logf
	sum := crashtest.Run(t, w, &o)
	return sum, found
}

var planted = []struct {
	name     string
	workload func(bug bool) crashtest.Workload
	// found checks that the bug is reported as it should be.
	found func(t *testing.T, sum crashtest.Summary, fs []crashtest.Failure)
}{
	{"unlogged store in a flushed line", tallyWorkload, func(t *testing.T, _ crashtest.Summary, fs []crashtest.Failure) {
		assert.True(t, anyErr(fs, "total"), "a total that disagrees with the hits: %v", fs)
		// The bug shows when the commit record reached the media and the
		// unlogged line did not, or the line did and the record did not:
		// a shrunk failure keeps at most the record's two lines.
		for _, f := range fs {
			assert.LessOrEqual(t, len(f.Lines), 2, "shrunk to the lines the bug needs: %s", f.ID)
		}
	}},
	{"pointer swap without logging its header", vecWorkload, func(t *testing.T, _ crashtest.Summary, fs []crashtest.Failure) {
		assert.NotEmpty(t, fs)
	}},
	{"wrong but logged final state", accountWorkload, func(t *testing.T, _ crashtest.Summary, fs []crashtest.Failure) {
		require.NotEmpty(t, fs)
		for _, f := range fs {
			assert.Equal(t, 2, f.Op, "only the last deposit is wrong: %s", f.ID)
			assert.Contains(t, f.Err.Error(), "balance 61 after 3 deposits")
		}
	}},
	{"leak between two transactions", bagWorkload, func(t *testing.T, _ crashtest.Summary, fs []crashtest.Failure) {
		require.True(t, errIs(fs, recovery.ErrUnreachable), "a leak: %v", fs)
		for _, f := range fs {
			assert.Regexp(t, `slab \d+ object \d+ \(github.com/pmemgo/pmemgo/crashtest_test.Item\)`, f.Err.Error(), "names slab, object and type")
		}
	}},
	{"engine refusal", freeWorkload, func(t *testing.T, sum crashtest.Summary, fs []crashtest.Failure) {
		require.Len(t, fs, 1)
		assert.Equal(t, "o2", fs[0].ID)
		assert.ErrorIs(t, fs[0].Err, pmemgo.ErrInvalidFree)
		assert.Contains(t, fs[0].Err.Error(), "operation 2 (remove again) refused")
		assert.Positive(t, sum.Images, "the states before the refused operation are explored")
	}},
}

// TestPlantedBugs runs each planted bug with zero Options and asserts it
// is reported, and the correct structure of each kind is not.
func TestPlantedBugs(t *testing.T) {
	for _, tc := range planted {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("correct", func(t *testing.T) {
				sum, fs := capture(t, tc.workload(false), nil)
				assert.Empty(t, fs)
				assert.Positive(t, sum.Images)
			})
			t.Run("broken", func(t *testing.T) {
				sum, fs := capture(t, tc.workload(true), nil)
				require.NotEmpty(t, fs, "crashtest must find the bug with zero Options")
				assert.Equal(t, fs, sum.Failures[:len(fs)], "each distinct failure is reported once")
				tc.found(t, sum, fs)
			})
		})
	}
}

func anyErr(fs []crashtest.Failure, s string) bool {
	for _, f := range fs {
		if strings.Contains(f.Err.Error(), s) {
			return true
		}
	}
	return false
}

// TestReplayEveryID replays every id reported for the planted bugs, with
// the pool forced to another base in between, and asserts each replay
// reports exactly that state and failure again.
func TestReplayEveryID(t *testing.T) {
	if testing.Short() {
		t.Skip("replays every reported state")
	}
	for _, tc := range planted {
		t.Run(tc.name, func(t *testing.T) {
			var bases []uintptr
			w := tc.workload(true)
			setup := w.Setup
			w.Setup = func(h *heap.Heap) error {
				bases = append(bases, h.Base())
				return setup(h)
			}
			_, fs := capture(t, w, nil)
			require.NotEmpty(t, fs)
			first := bases[0]
			// Hold the base the first run used, so that every replay's
			// pool lands elsewhere.
			hold := holdAddress(t, first, 2<<20)
			defer unix.Munmap(hold)
			for _, f := range fs {
				_, again := capture(t, w, &crashtest.Options{Replay: f.ID, Lines: crashtest.LinesNone})
				if assert.Len(t, again, 1, "replay of %s", f.ID) {
					assert.Equal(t, f.ID, again[0].ID)
					assert.Equal(t, unbased(f.Err.Error()), unbased(again[0].Err.Error()), "replay of %s", f.ID)
				}
				assert.NotEqual(t, first, bases[len(bases)-1], "the replay ran at another base")
			}
		})
	}
}

var address = regexp.MustCompile(`0x[0-9a-f]{8,}`)

// unbased drops the addresses from a message: a pointer's value depends
// on where the pool was mapped, its pool offset does not.
func unbased(msg string) string { return address.ReplaceAllString(msg, "0x…") }

// holdAddress maps n bytes at addr, which nothing may hold.
func holdAddress(t *testing.T, addr uintptr, n int) []byte {
	t.Helper()
	hint := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	p, err := unix.MmapPtr(-1, 0, hint, uintptr(n), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE)
	require.NoError(t, err)
	require.Equal(t, hint, p)
	return unsafe.Slice((*byte)(p), n)
}

// TestAllowLeaks checks that AllowLeaks turns the reachability check off
// for a workload that leaves unreachable objects on purpose.
func TestAllowLeaks(t *testing.T) {
	_, fs := capture(t, bagWorkload(true), &crashtest.Options{AllowLeaks: true})
	assert.Empty(t, fs)
}
