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

const demoPoolSize = 64 << 20

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
	where := path + " (kept)"
	if !o.keep {
		where = "in a temporary directory, removed afterwards (--keep keeps it)"
		defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	}
	plan := newDemoPlan(o.nodes)
	fmt.Fprintf(out, "pmemctl demo: %d people, %d addresses in a %d MiB pool\n", len(plan.people), len(plan.addrs), demoPoolSize>>20)
	fmt.Fprintf(out, "  pool      %s\n", where)

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
	fmt.Fprintf(out, "  built     in %v, %d transactions\n", elapsed.Round(100*time.Microsecond), txs)
	fmt.Fprintf(out, "  contents  %s\n", describeTypes(st.Types))
	fmt.Fprintf(out, "  slabs     %d of %d used, %d KiB each\n", st.SlabsUsed, st.SlabsTotal, st.SlabSize>>10)
	return nil
}

// fillDemo builds the graph in two transactions. The first allocates and
// links every object; being new, they need no logging. The second sets the
// registry's index, which the first committed, so it goes through Set,
// which logs the old value for rollback before storing the new one.
func fillDemo(h *heap.Heap, plan *demoPlan) (int, error) {
	var reg *Registry
	err := h.Update(func(tx *heap.Tx) error {
		var err error
		if reg, err = allocDemo(tx, plan); err != nil {
			return err
		}
		return linkDemo(tx, plan, reg)
	})
	if err != nil {
		return 0, fmt.Errorf("build: %w", err)
	}
	err = h.Update(func(tx *heap.Tx) error {
		var index [16]*Person
		for i, p := range plan.index {
			index[i] = reg.People[p]
		}
		return heap.Set(tx, &reg.Index, index)
	})
	if err != nil {
		return 1, fmt.Errorf("index: %w", err)
	}
	return 2, nil
}

// allocDemo allocates the registry, the addresses and the people with their
// own fields set; person a holds address a.
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

// linkDemo sets everyone's friends, best friend and shared address.
func linkDemo(tx *heap.Tx, plan *demoPlan, reg *Registry) error {
	for i, p := range reg.People {
		pp := &plan.people[i]
		friends, err := heap.MakeSlice[*Person](tx, len(pp.friends), len(pp.friends))
		if err != nil {
			return err
		}
		for k, f := range pp.friends {
			friends[k] = reg.People[f]
		}
		p.Friends = friends
		p.Best = reg.People[pp.best]
		if pp.addr >= 0 {
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
