package bench

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// opKind is one kind of operation of a workload.
type opKind uint8

const (
	opGet opKind = iota
	opPut
	opRMW
	opScan     // 100 keys
	opScanUpTo // 1 to 100 keys, as YCSB E
	opInsert
	opDelete
)

// op is one operation: its kind and the index of its key.
type op struct {
	kind opKind
	key  uint64
}

// workload describes a mix of operations.
type workload struct {
	name, about string
	// fill workloads build the store; the others run on a filled one.
	fill bool
	// writes is true when every operation writes: such phases may be
	// shared by an engine's writer goroutines.
	writes bool
	// ordered workloads need Scan.
	ordered bool
	gen     func(g *generator, n int) []op
}

var workloads = []workload{
	{name: "fillseq", about: "insert the keys in ascending order", fill: true, writes: true, gen: func(g *generator, n int) []op {
		return g.each(n, func(i int) op { return op{opPut, uint64(i)} })
	}},
	{name: "fillrandom", about: "insert the keys in random order", fill: true, writes: true, gen: func(g *generator, n int) []op {
		perm := g.r.Perm(g.keys)
		return g.each(n, func(i int) op { return op{opPut, uint64(perm[i%len(perm)])} })
	}},
	{name: "readrandom", about: "read uniformly chosen keys", gen: mix(only(opGet), uniform)},
	{name: "readzipf", about: "read zipfian keys (theta 0.99)", gen: mix(only(opGet), zipfian)},
	{name: "updaterandom", about: "overwrite uniformly chosen keys", writes: true, gen: mix(only(opPut), uniform)},
	{name: "rmw", about: "read-modify-write uniformly chosen keys", writes: true, gen: mix(only(opRMW), uniform)},
	{name: "scan100", about: "scan 100 keys from a uniformly chosen key", ordered: true, gen: mix(only(opScan), uniform)},
	{name: "ycsb-a", about: "50% reads, 50% updates, zipfian", gen: mix(two(opGet, 0.5, opPut), zipfian)},
	{name: "ycsb-b", about: "95% reads, 5% updates, zipfian", gen: mix(two(opGet, 0.95, opPut), zipfian)},
	{name: "ycsb-c", about: "100% reads, zipfian", gen: mix(only(opGet), zipfian)},
	{name: "ycsb-e", about: "95% scans of up to 100 keys, 5% inserts, zipfian", ordered: true, gen: mix(two(opScanUpTo, 0.95, opInsert), zipfian)},
	{name: "ycsb-f", about: "50% reads, 50% read-modify-writes, zipfian", gen: mix(two(opGet, 0.5, opRMW), zipfian)},
	{name: "deleterandom", about: "delete uniformly chosen keys", writes: true, gen: func(g *generator, n int) []op {
		perm := g.r.Perm(g.keys)
		return g.each(min(n, g.keys), func(i int) op { return op{opDelete, uint64(perm[i])} })
	}},
}

// Workloads returns the names and descriptions of the workloads, in the
// order they run.
func Workloads() [][2]string {
	out := make([][2]string, len(workloads))
	for i, w := range workloads {
		out[i] = [2]string{w.name, w.about}
	}
	return out
}

func workloadByName(name string) (workload, error) {
	for _, w := range workloads {
		if w.name == name {
			return w, nil
		}
	}
	names := make([]string, len(workloads))
	for i, w := range workloads {
		names[i] = w.name
	}
	return workload{}, fmt.Errorf("bench: no workload %q (workloads: %s)", name, strings.Join(names, ", "))
}

// generator draws the operations of a run from one seed, so that every
// engine sees the same keys in the same order.
type generator struct {
	r    *rand.Rand
	keys int
	// next is the index of the next key to insert.
	next uint64
	zipf *zipf
}

func newGenerator(seed uint64, keys int) *generator {
	return &generator{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), keys: keys, next: uint64(keys)}
}

func (g *generator) each(n int, f func(i int) op) []op {
	ops := make([]op, n)
	for i := range ops {
		ops[i] = f(i)
	}
	return ops
}

// kindMix draws an operation kind: a with probability pa, else b.
type kindMix struct {
	a  opKind
	pa float64
	b  opKind
}

func only(k opKind) kindMix                      { return kindMix{k, 1, k} }
func two(a opKind, pa float64, b opKind) kindMix { return kindMix{a, pa, b} }

func uniform(g *generator) uint64 { return g.r.Uint64N(uint64(g.keys)) }

// zipfian draws YCSB's scrambled zipfian keys: popular ranks are spread
// over the key space by a hash.
func zipfian(g *generator) uint64 {
	if g.zipf == nil {
		g.zipf = newZipf(uint64(g.keys), 0.99)
	}
	return mix64(g.zipf.next(g.r)) % uint64(g.keys)
}

func mix(m kindMix, keyOf func(*generator) uint64) func(g *generator, n int) []op {
	return func(g *generator, n int) []op {
		return g.each(n, func(int) op {
			kind := m.a
			if g.r.Float64() >= m.pa {
				kind = m.b
			}
			if kind == opInsert {
				g.next++
				return op{opInsert, g.next - 1}
			}
			return op{kind, keyOf(g)}
		})
	}
}

// zipf is the generator of Gray et al., "Quickly generating
// billion-record synthetic databases", as YCSB uses it.
type zipf struct {
	n                   uint64
	theta, alpha, zetan float64
	eta, half           float64
}

func newZipf(n uint64, theta float64) *zipf {
	zeta := func(n uint64) float64 {
		s := 0.0
		for i := uint64(1); i <= n; i++ {
			s += 1 / math.Pow(float64(i), theta)
		}
		return s
	}
	z := &zipf{n: n, theta: theta, alpha: 1 / (1 - theta), zetan: zeta(n)}
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta(2)/z.zetan)
	z.half = 1 + math.Pow(0.5, theta)
	return z
}

func (z *zipf) next(r *rand.Rand) uint64 {
	u := r.Float64()
	uz := u * z.zetan
	switch {
	case uz < 1:
		return 0
	case uz < z.half:
		return 1
	}
	return min(z.n-1, uint64(float64(z.n)*math.Pow(z.eta*u-z.eta+1, z.alpha)))
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// keyAt is the key of index i: 16 hex digits, so that the order of the
// keys is the order of the indexes and fillseq inserts in key order.
func keyAt(i uint64) (k Key) {
	var b [8]byte
	for j := range b {
		b[j] = byte(i >> (56 - 8*j))
	}
	hex.Encode(k[:], b[:])
	return k
}

// valueFor fills a value that differs from key to key and from write to
// write.
func valueFor(v *Value, i, stamp uint64) {
	for j := 0; j < len(v); j += 8 {
		x := mix64(i ^ stamp<<32 ^ uint64(j))
		for b := 0; b < 8 && j+b < len(v); b++ {
			v[j+b] = byte(x >> (8 * b))
		}
	}
}
