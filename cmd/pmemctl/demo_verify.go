package main

import (
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// maxReported bounds the mismatches printed; the count covers them all.
const maxReported = 10

func newDemoVerifyCmd() *cobra.Command {
	var (
		path  string
		nodes int
	)
	cmd := &cobra.Command{
		Use:    "demo-verify --pool PATH --nodes N",
		Short:  "Reopen a demo pool at a new address and verify it (run by demo in a child process)",
		Hidden: true,
		Args:   cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if path == "" || nodes < 1 {
				return usageError(errors.New("demo-verify needs --pool and --nodes of at least 1"))
			}
			return nil
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runDemoVerify(cmd.OutOrStdout(), path, nodes)
		}),
	}
	cmd.Flags().StringVar(&path, "pool", "", "pool built by demo")
	cmd.Flags().IntVar(&nodes, "nodes", 0, "number of people demo built it with")
	return cmd
}

func runDemoVerify(out io.Writer, path string, nodes int) (err error) {
	h, err := heap.Open(path, &heap.Options{ForceRelocate: true, Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, h.Close()) }()
	printRecovery(out, h.Recovery())

	st := h.Stats()
	plan := newDemoPlan(nodes)
	v := &verifier{plan: plan, base: h.Base(), end: h.Base() + uintptr(st.Size)}
	if err := h.View(func(tx *heap.Tx) error {
		reg, err := heap.Root[Registry](tx)
		if err != nil {
			return err
		}
		v.registry(reg)
		return nil
	}); err != nil {
		return err
	}
	v.counts(st.Types)
	if !h.Recovery().Relocated {
		v.fail("the pool was not relocated although ForceRelocate was set")
	}
	for _, p := range v.problems {
		fmt.Fprintf(out, "  MISMATCH  %s\n", p)
	}
	if v.n > 0 {
		return problemsError(fmt.Errorf("%d mismatches in the reopened pool", v.n))
	}
	fmt.Fprintf(out, "  verified  %d Person, %d Address, 1 Registry field by field: every value and pointer as built\n",
		len(plan.people), len(plan.addrs))
	return nil
}

func printRecovery(out io.Writer, r recovery.Report) {
	sw := r.Swizzle
	fmt.Fprintf(out, "  relocated %#x -> %#x\n", r.OldBase, r.NewBase)
	fmt.Fprintf(out, "  swizzled  %d pointers in %d slabs (%d KiB) in %v, after a %v validation pass\n",
		sw.Pointers, sw.Slabs, sw.Bytes>>10, sw.Duration.Round(time.Microsecond), r.Validate.Round(time.Microsecond))
}

// verifier compares a reopened demo pool with its plan. Every pointer must
// lie in the new mapping and point to the object the plan says.
type verifier struct {
	plan      *demoPlan
	base, end uintptr
	// n counts mismatches; problems holds the first maxReported.
	n        int
	problems []string
}

func (v *verifier) fail(format string, args ...any) {
	v.n++
	if len(v.problems) < maxReported {
		v.problems = append(v.problems, fmt.Sprintf(format, args...))
	}
}

// inPool reports whether p, non-nil, is inside the pool's mapping.
func (v *verifier) inPool(what string, p unsafe.Pointer) bool {
	if a := uintptr(p); a < v.base || a >= v.end {
		v.fail("%s at %#x is outside the pool [%#x, %#x)", what, a, v.base, v.end)
		return false
	}
	return true
}

func (v *verifier) registry(reg *Registry) {
	n := len(v.plan.people)
	if reg == nil || !v.inPool("registry", unsafe.Pointer(reg)) {
		v.fail("no registry root")
		return
	}
	if reg.Count != n || len(reg.People) != n {
		v.fail("registry: Count %d, %d People, want %d", reg.Count, len(reg.People), n)
		return
	}
	if !v.inPool("registry People array", unsafe.Pointer(unsafe.SliceData(reg.People))) {
		return
	}
	for i, p := range reg.People {
		if p == nil || !v.inPool(fmt.Sprintf("person %d", i), unsafe.Pointer(p)) {
			v.fail("person %d: missing", i)
			return
		}
	}
	for i := range reg.People {
		v.person(reg, i)
	}
	for i, want := range v.plan.index {
		if reg.Index[i] != reg.People[want] {
			v.fail("registry Index[%d] is not person %d", i, want)
		}
	}
}

// person checks person i; all people are known to be in the pool.
func (v *verifier) person(reg *Registry, i int) {
	pp, p := &v.plan.people[i], reg.People[i]
	if p.ID != v.plan.id(i) {
		v.fail("person %d: ID %d, want %d", i, p.ID, v.plan.id(i))
	}
	v.str(fmt.Sprintf("person %d Name", i), p.Name, pp.name)
	if p.Scores != pp.scores {
		v.fail("person %d: Scores %v, want %v", i, p.Scores, pp.scores)
	}
	if len(p.Friends) != len(pp.friends) {
		v.fail("person %d: %d friends, want %d", i, len(p.Friends), len(pp.friends))
	} else if len(p.Friends) > 0 && v.inPool(fmt.Sprintf("person %d Friends array", i), unsafe.Pointer(unsafe.SliceData(p.Friends))) {
		for k, f := range pp.friends {
			if p.Friends[k] != reg.People[f] {
				v.fail("person %d: Friends[%d] is not person %d", i, k, f)
			}
		}
	}
	if p.Best != reg.People[pp.best] {
		v.fail("person %d: Best is not person %d", i, pp.best)
	}
	v.address(reg, i)
}

// address checks person i's address: the object person a holds for
// address a, shared by everyone living there.
func (v *verifier) address(reg *Registry, i int) {
	a, p := v.plan.people[i].addr, reg.People[i]
	switch {
	case a < 0 && p.Addr != nil:
		v.fail("person %d: has an address, want none", i)
	case a < 0:
	case p.Addr == nil:
		v.fail("person %d: no address, want address %d", i, a)
	case i != a && p.Addr != reg.People[a].Addr:
		v.fail("person %d: Addr is not the address person %d holds", i, a)
	case i == a && v.inPool(fmt.Sprintf("address %d", a), unsafe.Pointer(p.Addr)):
		ap := &v.plan.addrs[a]
		v.str(fmt.Sprintf("address %d Street", a), p.Addr.Street, ap.street)
		if p.Addr.Zip != ap.zip {
			v.fail("address %d: Zip %d, want %d", a, p.Addr.Zip, ap.zip)
		}
	}
}

func (v *verifier) str(what, got, want string) {
	if len(got) > 0 && !v.inPool(what, unsafe.Pointer(unsafe.StringData(got))) {
		return
	}
	if got != want {
		v.fail("%s is %q, want %q", what, got, want)
	}
}

// counts checks that the pool holds as many objects of each type as the
// plan made, no more: nothing leaked, nothing lost.
func (v *verifier) counts(types []heap.TypeStats) {
	want := map[string]int{"Person": len(v.plan.people), "Address": len(v.plan.addrs), "Registry": 1}
	for _, t := range types {
		name := qualifier.ReplaceAllString(t.Name, "")
		if w, ok := want[name]; ok && t.Objects != w {
			v.fail("the pool holds %d %s objects, want %d", t.Objects, name, w)
		}
	}
}
