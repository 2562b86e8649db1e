package crashtest

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
)

// autoAllLines is the most dirty lines at a point for which LinesAuto
// adds every subset of them; above it, every pair and random sets.
const autoAllLines = 10

// tier is a class of variants, explored in a pass of its own over every
// crash point, weakest first, so that a budget that runs out drops the
// strongest tier rather than the last operations.
type tier struct {
	name string
	// count returns how many variants point p has in this tier, and
	// variant the k-th of them.
	count   func(p *point, i int) int
	variant func(p *point, i, k int) []Line
}

// pass is a tier with the variants chosen at each point.
type pass struct {
	name     string
	variants [][][]Line // per point
	n, total int        // variants chosen, and in the whole tier
	dups     int        // variants left out because another makes their image
}

// planDedupMax is the largest tier whose variants plan lists to drop the
// images another variant already makes; larger tiers are sampled as they
// are, and the duplicates skipped when checked.
const planDedupMax = 1 << 18

// candidate is a variant of point i.
type candidate struct {
	i int
	v []Line
}

// plan chooses the variants to check: every tier of the line mode in full
// while the image budget lasts, then a sample of the first tier that does
// not fit, drawn with the seed. Images that an earlier variant makes are
// left out, so that the budget counts distinct images.
func (r *runner) plan() []pass {
	budget := r.o.MaxImages
	planned := map[uint64]bool{}
	var passes []pass
	for ti, t := range r.tiers() {
		if ti == 0 {
			// The durable state at every point, the states the operations
			// leave included, is always checked in full.
			budget = max(budget, len(r.points))
		}
		raw := 0
		for i := range r.points {
			if r.planned(i) {
				raw += t.count(&r.points[i], i)
			}
		}
		if raw == 0 {
			continue
		}
		ps := pass{name: t.name, variants: make([][][]Line, len(r.points))}
		rng := rand.New(rand.NewPCG(uint64(r.o.Seed), uint64(len(passes))))
		if raw <= planDedupMax {
			var cands []candidate
			for i := range r.points {
				if !r.planned(i) {
					continue
				}
				p := &r.points[i]
				for k := range t.count(p, i) {
					v := t.variant(p, i, k)
					if key := imageKey(p, v); !planned[key] {
						planned[key] = true
						cands = append(cands, candidate{i, v})
					} else {
						ps.dups++
					}
				}
			}
			ps.total = len(cands)
			ps.n = min(ps.total, budget)
			sample(rng, ps.total, ps.n, func(j int) {
				c := cands[j]
				ps.variants[c.i] = append(ps.variants[c.i], c.v)
			})
		} else {
			ps.total = raw
			ps.n = min(raw, budget)
			r.sampleRaw(rng, t, &ps)
		}
		budget -= ps.n
		if ps.total > 0 {
			passes = append(passes, ps)
		}
	}
	return passes
}

// planned reports whether point i is explored: points before flushes
// only with Options.Flushes.
func (r *runner) planned(i int) bool { return r.o.Flushes || !r.points[i].flush }

// sample calls pick, in increasing order, with keep indices of [0, total)
// drawn by selection sampling: each with the probability that leaves
// exactly keep chosen.
func sample(rng *rand.Rand, total, keep int, pick func(int)) {
	chosen := 0
	for j := range total {
		if keep == total || rng.IntN(total-j) < keep-chosen {
			pick(j)
			chosen++
		}
	}
}

// sampleRaw samples a tier too large to list, by index.
func (r *runner) sampleRaw(rng *rand.Rand, t tier, ps *pass) {
	seen, chosen := 0, 0
	for i := range r.points {
		if !r.planned(i) {
			continue
		}
		p := &r.points[i]
		for k := range t.count(p, i) {
			if rng.IntN(ps.total-seen) < ps.n-chosen {
				ps.variants[i] = append(ps.variants[i], t.variant(p, i, k))
				chosen++
			}
			seen++
		}
	}
}

// coverage describes the passes for the summary.
func coverage(passes []pass, seed int64) (string, bool) {
	var full, sampled, skipped []string
	for _, p := range passes {
		switch {
		case p.n == p.total:
			full = append(full, fmt.Sprintf("%s (%d)", p.name, p.n))
		case p.n > 0:
			sampled = append(sampled, fmt.Sprintf("%s (%d of %d, seed %d)", p.name, p.n, p.total, seed))
		default:
			skipped = append(skipped, fmt.Sprintf("%s (%d)", p.name, p.total))
		}
	}
	s := "covered: " + strings.Join(full, ", ")
	if len(sampled) > 0 {
		s += "; sampled: " + strings.Join(sampled, ", ")
	}
	if len(skipped) > 0 {
		s += "; over budget, not checked: " + strings.Join(skipped, ", ")
	}
	return s, len(sampled)+len(skipped) > 0
}

func whole(p *point, idx ...int) []Line {
	v := make([]Line, len(idx))
	for k, j := range idx {
		v[k] = Line{Index: p.extras[j].line, Words: 8}
	}
	return v
}

func one(*point, int) int                 { return 1 }
func durableOnly(*point, int, int) []Line { return nil }

// tiers lists the tiers of the line mode, weakest first.
func (r *runner) tiers() []tier {
	durable := tier{name: "durable state at every point", count: one, variant: durableOnly}
	single := tier{name: "single dirty lines",
		count:   func(p *point, _ int) int { return len(p.extras) },
		variant: func(p *point, _, k int) []Line { return whole(p, k) }}
	torn := tier{name: "torn single lines",
		count: func(p *point, _ int) int { return 7 * len(p.extras) },
		variant: func(p *point, _, k int) []Line {
			return []Line{{Index: p.extras[k/7].line, Words: k%7 + 1}}
		}}
	var ts []tier
	switch r.o.Lines {
	case LinesAuto:
		ts = []tier{durable, single, torn, r.autoSets()}
	case LinesNone:
		ts = []tier{durable}
	case LinesSingle:
		ts = []tier{durable, single}
	case LinesUpTo:
		ts = []tier{durable, r.setsUpTo(r.o.K)}
	case LinesAll:
		ts = []tier{durable, r.allSets(r.o.K)}
	case LinesRandom:
		ts = []tier{durable, r.randomSets("random sets", 0)}
	}
	if r.o.Torn && r.o.Lines != LinesAuto && r.o.Lines != LinesNone {
		ts = append(ts, torn)
	}
	return ts
}

// autoSets is LinesAuto's last tier: every set of two or more lines at a
// point with few dirty lines, every pair and random sets at the others.
func (r *runner) autoSets() tier {
	pairs := func(n int) int { return n * (n - 1) / 2 }
	return tier{name: "sets of several lines",
		count: func(p *point, _ int) int {
			n := len(p.extras)
			if n <= autoAllLines {
				return 1<<n - 1 - n
			}
			return pairs(n) + r.o.Samples
		},
		variant: func(p *point, i, k int) []Line {
			n := len(p.extras)
			if n <= autoAllLines {
				return whole(p, maskIndices(nthMultiMask(n, k))...)
			}
			if k < pairs(n) {
				a, b := nthPair(n, k)
				return whole(p, a, b)
			}
			return randomSet(p, r.o.Seed, i, k)
		}}
}

// setsUpTo is every set of 1 to k lines.
func (r *runner) setsUpTo(k int) tier {
	memo := map[int][][]int{}
	sets := func(n int) [][]int {
		s, ok := memo[n]
		if !ok {
			s = subsetsUpTo(n, k)
			memo[n] = s
		}
		return s
	}
	return tier{name: fmt.Sprintf("sets of at most %d lines", k),
		count:   func(p *point, _ int) int { return len(sets(len(p.extras))) },
		variant: func(p *point, _, j int) []Line { return whole(p, sets(len(p.extras))[j]...) }}
}

// allSets is every non-empty set of lines at points with at most
// autoAllLines dirty lines, sets of at most k at the others.
func (r *runner) allSets(k int) tier {
	upTo := r.setsUpTo(k)
	return tier{name: "all sets of lines",
		count: func(p *point, i int) int {
			if n := len(p.extras); n <= autoAllLines {
				return 1<<n - 1
			}
			return upTo.count(p, i)
		},
		variant: func(p *point, i, j int) []Line {
			if len(p.extras) <= autoAllLines {
				return whole(p, maskIndices(uint64(j+1))...)
			}
			return upTo.variant(p, i, j)
		}}
}

// randomSets is Options.Samples random sets per point.
func (r *runner) randomSets(name string, first int) tier {
	return tier{name: name,
		count: func(p *point, _ int) int {
			if len(p.extras) == 0 {
				return 0
			}
			return r.o.Samples
		},
		variant: func(p *point, i, k int) []Line { return randomSet(p, r.o.Seed, i, first+k) }}
}

// randomSet is the k-th random set of point i: each line in it with
// probability one half, from a generator seeded by seed, i and k, so that
// it does not depend on which other sets were drawn.
func randomSet(p *point, seed int64, i, k int) []Line {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(i)<<32|uint64(k)))
	var idx []int
	for j := range p.extras {
		if rng.IntN(2) == 1 {
			idx = append(idx, j)
		}
	}
	return whole(p, idx...)
}

// multiMasks lists, for n bits, the masks with two or more set, in
// increasing order; it is built once per n.
var multiMasks = sync.OnceValue(func() [][]uint64 {
	out := make([][]uint64, autoAllLines+1)
	for n := range out {
		for m := uint64(1); m < 1<<n; m++ {
			if bits.OnesCount64(m) >= 2 {
				out[n] = append(out[n], m)
			}
		}
	}
	return out
})

// nthMultiMask returns the k-th mask of n bits with two or more set, in
// increasing order.
func nthMultiMask(n, k int) uint64 { return multiMasks()[n][k] }

func maskIndices(m uint64) []int {
	var idx []int
	for m != 0 {
		idx = append(idx, bits.TrailingZeros64(m))
		m &= m - 1
	}
	return idx
}

// nthPair returns the k-th pair (a < b) of [0, n) in lexicographic order.
func nthPair(n, k int) (int, int) {
	for a := 0; a < n; a++ {
		if k < n-1-a {
			return a, a + 1 + k
		}
		k -= n - 1 - a
	}
	return 0, 0
}

// subsetsUpTo returns every subset of [0, n) with 1 to k members.
func subsetsUpTo(n, k int) [][]int {
	var out [][]int
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) > 0 {
			out = append(out, append([]int(nil), cur...))
		}
		if len(cur) == k {
			return
		}
		for j := start; j < n; j++ {
			rec(j+1, append(cur, j))
		}
	}
	rec(0, nil)
	return out
}
