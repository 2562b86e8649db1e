package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
)

const (
	demoPoolSize = 64 << 20
	// demoBatch bounds the people linked per transaction, so that the undo
	// log stays small whatever --nodes is.
	demoBatch = 1024
)

type demoOptions struct {
	dir   string
	nodes int
	keep  bool
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a graph of objects in a new pool and verify it after relocation",
		Long: `Demo creates a 64 MiB pool in a temporary directory and builds a graph of
people, addresses and a registry, with cycles and shared objects. It closes
the pool and reopens it in a child process, mapped at a new address so that
every stored pointer is rewritten (swizzled), and checks every object field
by field. The pool is removed afterwards unless --keep is given.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.nodes < 1 {
				return usageError(fmt.Errorf("--nodes must be at least 1, not %d", o.nodes))
			}
			return nil
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory to create the pool's temporary directory in (default: the system's)")
	cmd.Flags().IntVar(&o.nodes, "nodes", 3000, "number of people in the graph")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the pool file instead of removing it")
	return cmd
}

func runDemo(out, errOut io.Writer, o demoOptions) (err error) {
	dir, err := os.MkdirTemp(o.dir, "pmemctl-demo-")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "demo.pool")
	fate := "kept"
	if !o.keep {
		fate = "removed afterwards; --keep keeps it"
		defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	}
	plan := newDemoPlan(o.nodes)
	fmt.Fprintf(out, "pmemctl demo: %d people, %d addresses in a %d MiB pool\n", len(plan.people), len(plan.addrs), demoPoolSize>>20)
	fmt.Fprintf(out, "  pool      %s (%s)\n", path, fate)

	if err := buildDemo(out, path, plan); err != nil {
		return err
	}
	fmt.Fprintln(out, "reopening in a child process with ForceRelocate:")
	return verifyInChild(out, errOut, path, o.nodes)
}

// buildDemo creates the pool, fills it from plan and closes it, printing
// what it built.
func buildDemo(out io.Writer, path string, plan *demoPlan) error {
	h, err := heap.Open(path, &heap.Options{Size: demoPoolSize})
	if err != nil {
		return err
	}
	t0 := time.Now()
	txs, err := fillDemo(h, plan)
	if err != nil {
		return errors.Join(err, h.Close())
	}
	elapsed := time.Since(t0)
	st := h.Stats()
	if err := h.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "  built     in %v, %d transactions (allocate, then link with Add before changing)\n", elapsed.Round(time.Microsecond), txs)
	fmt.Fprintf(out, "  contents  %s\n", describeTypes(st.Types))
	fmt.Fprintf(out, "  slabs     %d of %d used, %d KiB each\n", st.SlabsUsed, st.SlabsTotal, st.SlabSize>>10)
	return nil
}

// fillDemo allocates every object in one transaction, then links them in
// batches: objects allocated by an earlier transaction must be logged with
// Add before they change. It returns the number of transactions.
func fillDemo(h *heap.Heap, plan *demoPlan) (int, error) {
	var reg *Registry
	err := h.Update(func(tx *heap.Tx) error {
		var err error
		reg, err = allocDemo(tx, plan)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("allocate: %w", err)
	}
	txs := 1
	for lo := 0; lo < len(plan.people); lo += demoBatch {
		hi := min(lo+demoBatch, len(plan.people))
		err := h.Update(func(tx *heap.Tx) error { return linkDemo(tx, plan, reg, lo, hi) })
		if err != nil {
			return txs, fmt.Errorf("link people %d to %d: %w", lo, hi, err)
		}
		txs++
	}
	err = h.Update(func(tx *heap.Tx) error {
		if err := heap.Add(tx, &reg.Index); err != nil {
			return err
		}
		for i, p := range plan.index {
			reg.Index[i] = reg.People[p]
		}
		return nil
	})
	if err != nil {
		return txs, fmt.Errorf("index: %w", err)
	}
	return txs + 1, nil
}

// allocDemo allocates the registry, the addresses and the people with their
// own fields set, people pointing to nothing yet. Every object is new, so
// nothing needs logging; people i < len(addrs) hold address i.
func allocDemo(tx *heap.Tx, plan *demoPlan) (*Registry, error) {
	reg, err := heap.Root[Registry](tx)
	if err != nil {
		return nil, err
	}
	n := len(plan.people)
	if reg.People, err = heap.MakeSlice[*Person](tx, n, n); err != nil {
		return nil, err
	}
	reg.Count = n
	for i, pp := range plan.people {
		p, err := heap.New[Person](tx)
		if err != nil {
			return nil, err
		}
		p.ID, p.Scores = plan.id(i), pp.scores
		if p.Name, err = heap.NewString(tx, pp.name); err != nil {
			return nil, err
		}
		reg.People[i] = p
	}
	for i, ap := range plan.addrs {
		a, err := heap.New[Address](tx)
		if err != nil {
			return nil, err
		}
		a.Zip = ap.zip
		if a.Street, err = heap.NewString(tx, ap.street); err != nil {
			return nil, err
		}
		reg.People[i].Addr = a
	}
	return reg, nil
}

// linkDemo sets the friends, best friend and address of people [lo, hi).
func linkDemo(tx *heap.Tx, plan *demoPlan, reg *Registry, lo, hi int) error {
	for i := lo; i < hi; i++ {
		pp, p := &plan.people[i], reg.People[i]
		if err := heap.Add(tx, p); err != nil {
			return err
		}
		friends, err := heap.MakeSlice[*Person](tx, len(pp.friends), len(pp.friends))
		if err != nil {
			return err
		}
		for k, f := range pp.friends {
			friends[k] = reg.People[f]
		}
		p.Friends = friends
		p.Best = reg.People[pp.best]
		if pp.addr < 0 {
			p.Addr = nil
		} else {
			p.Addr = reg.People[pp.addr].Addr
		}
	}
	return nil
}

// verifyInChild runs demo-verify on the pool in a new process, so that the
// pool is mapped in an address space that never saw it, and passes its
// output on.
func verifyInChild(out, errOut io.Writer, path string, nodes int) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	child := exec.Command(exe, "demo-verify", "--pool", path, "--nodes", strconv.Itoa(nodes))
	child.Env = append(os.Environ(), childEnv+"=1")
	child.Stdout, child.Stderr = out, errOut
	err = child.Run()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		code := exit.ExitCode()
		if code != exitProblems {
			code = exitIO
		}
		return &exitError{code: code, err: fmt.Errorf("verification in child process failed: %w", err)}
	}
	if err != nil {
		return fmt.Errorf("run child process: %w", err)
	}
	return nil
}

// qualifier matches the package path in a stored type name.
var qualifier = regexp.MustCompile(`[A-Za-z0-9_./-]+\.`)

// describeTypes summarises what the pool holds per type, objects first.
func describeTypes(types []heap.TypeStats) string {
	var objects, arrays []string
	for _, t := range types {
		name := qualifier.ReplaceAllString(t.Name, "")
		if demoObjectTypes[name] {
			objects = append(objects, fmt.Sprintf("%d %s", t.Objects, name))
		} else {
			arrays = append(arrays, fmt.Sprintf("%d []%s", t.Objects, name))
		}
	}
	s := "objects: " + strings.Join(objects, ", ")
	if len(arrays) > 0 {
		s += "; arrays: " + strings.Join(arrays, ", ")
	}
	return s
}
