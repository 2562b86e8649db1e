// Package bench measures pmemgo's persistent maps against the stores a Go
// program would otherwise use: bbolt (one Update per write, and Batch),
// pebble with synced writes, and, as ceilings without durability, Go's
// map and github.com/google/btree. Every engine gets the same directory,
// the same keys in the same order (16-byte keys, 100-byte values) and the
// same durability: a write is durable when the call returns. Engines run
// in one process, interleaved in rounds, so that the machine's noise hits
// them alike.
//
// Run is what `pmemctl bench` calls; `go test -bench . ./bench/` runs the
// same workloads as Go benchmarks.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pmemgo/pmemgo/internal/benchutil"
)

// Config says what Run measures.
type Config struct {
	// Keys is the number of keys the stores are filled with.
	Keys int
	// Ops is the number of operations per workload and engine; 0 means
	// Keys.
	Ops int
	// Dir is where the stores are made, in a fresh directory removed
	// afterwards; "" means /dev/shm when it exists.
	Dir string
	// Engines and Workloads select by name; nil means all.
	Engines, Workloads []string
	// Rounds is how many slices each workload is cut into, the engines
	// taking turns on each; 0 means 10.
	Rounds int
	Seed   uint64
	// Warm reads every key of each reopened store once, untimed, before
	// the workloads run, so that they measure warm stores: without it the
	// first workload after the reopen pays the page faults (or cache
	// misses) of a store just opened, which Go's memory never pays.
	Warm bool
	// Context, when set, stops the run once it is done (between slices of
	// a workload): Run then removes what it made and returns its error.
	Context context.Context
}

// Result is one engine's figures for one workload.
type Result struct {
	Engine, Workload string
	Ops              int
	OpsPerSec        float64
	P50, P99         time.Duration
	// Skipped says why the engine did not run the workload.
	Skipped string `json:",omitempty"`
}

// EngineStats is what one engine's filled store costs.
type EngineStats struct {
	Engine string
	// DiskBytes is what the store's files occupy (allocated blocks) once
	// filled and closed; BytesPerKey divides it by the keys. Zero for the
	// in-memory engines.
	DiskBytes   int64
	BytesPerKey float64
	// Open is the time to open the filled store and answer the first Get;
	// zero for the in-memory engines.
	Open time.Duration
	// RSS is how much the process's resident set grew while the engine
	// filled its store (file pages it maps included).
	RSS int64
}

// Report is the outcome of Run.
type Report struct {
	Keys, Ops     int
	Dir           string
	PayloadPerKey int
	// Warm says the stores were warmed before the workloads (Config.Warm).
	Warm    bool `json:",omitempty"`
	Results []Result
	Engines []EngineStats
}

// store is an engine under test and its figures.
type store struct {
	spec engineSpec
	eng  Engine
	dir  string
	st   EngineStats
}

// Run measures the selected engines on the selected workloads.
func Run(cfg Config) (*Report, error) {
	if cfg.Keys <= 0 {
		return nil, fmt.Errorf("bench: %d keys: must be positive", cfg.Keys)
	}
	cfg.Ops = cmpOr(cfg.Ops, cfg.Keys)
	cfg.Rounds = cmpOr(cfg.Rounds, 10)
	cfg.Seed = cmpOr(cfg.Seed, 1)
	specs, wls, err := selection(cfg)
	if err != nil {
		return nil, err
	}
	parent := cfg.Dir
	if parent == "" {
		if fi, err := os.Stat(benchutil.ShmDir); err == nil && fi.IsDir() {
			parent = benchutil.ShmDir
		}
	}
	dir, err := os.MkdirTemp(parent, "pmemgo-bench-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &runner{cfg: cfg, rep: &Report{Keys: cfg.Keys, Ops: cfg.Ops, Dir: parent, PayloadPerKey: len(Key{}) + len(Value{}), Warm: cfg.Warm}}
	err = r.run(dir, specs, wls)
	return r.rep, err
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func selection(cfg Config) ([]engineSpec, []workload, error) {
	var specs []engineSpec
	for _, e := range engines {
		if cfg.Engines == nil || slices.Contains(cfg.Engines, e.name) {
			specs = append(specs, e)
		}
	}
	for _, name := range cfg.Engines {
		if _, err := engineByName(name); err != nil {
			return nil, nil, err
		}
	}
	var wls []workload
	for _, w := range workloads {
		if cfg.Workloads == nil || slices.Contains(cfg.Workloads, w.name) {
			wls = append(wls, w)
		}
	}
	for _, name := range cfg.Workloads {
		if _, err := workloadByName(name); err != nil {
			return nil, nil, err
		}
	}
	if len(specs) == 0 || len(wls) == 0 {
		return nil, nil, errors.New("bench: no engine or no workload selected")
	}
	return specs, wls, nil
}

type runner struct {
	cfg Config
	rep *Report
}

// stopped returns why the run must stop, if its context is done.
func (r *runner) stopped() error {
	if r.cfg.Context == nil || r.cfg.Context.Err() == nil {
		return nil
	}
	return fmt.Errorf("bench: stopped: %w", context.Cause(r.cfg.Context))
}

func (r *runner) run(dir string, specs []engineSpec, wls []workload) error {
	gen := newGenerator(r.cfg.Seed, r.cfg.Keys)
	for _, w := range wls {
		if w.name != "fillseq" {
			continue
		}
		stores, err := openStores(filepath.Join(dir, w.name), specs, r.cfg.Keys)
		if err != nil {
			return err
		}
		err = r.phase(w, w.gen(gen, r.cfg.Keys), stores, false)
		closeStores(stores)
		os.RemoveAll(filepath.Join(dir, w.name))
		if err != nil {
			return err
		}
	}
	stores, err := openStores(filepath.Join(dir, "main"), specs, r.cfg.Keys)
	if err != nil {
		return err
	}
	defer closeStores(stores)
	fill, _ := workloadByName("fillrandom")
	if err := r.phase(fill, fill.gen(gen, r.cfg.Keys), stores, !slices.ContainsFunc(wls, func(w workload) bool { return w.name == "fillrandom" })); err != nil {
		return err
	}
	for _, s := range stores {
		if err := r.stopped(); err != nil {
			return err
		}
		if err := s.reopen(r.cfg.Keys); err != nil {
			return fmt.Errorf("bench: reopen %s: %w", s.spec.name, err)
		}
		r.rep.Engines = append(r.rep.Engines, s.st)
		if r.cfg.Warm {
			if err := s.warm(r.cfg.Keys); err != nil {
				return fmt.Errorf("bench: warm %s: %w", s.spec.name, err)
			}
		}
	}
	for _, w := range wls {
		if w.fill {
			continue
		}
		if err := r.phase(w, w.gen(gen, r.cfg.Ops), stores, false); err != nil {
			return err
		}
	}
	return nil
}

func openStores(dir string, specs []engineSpec, keys int) ([]*store, error) {
	var stores []*store
	for _, spec := range specs {
		s := &store{spec: spec, eng: spec.new(), dir: filepath.Join(dir, spec.name), st: EngineStats{Engine: spec.name}}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return stores, err
		}
		if err := s.eng.Open(s.dir, keys); err != nil {
			closeStores(stores)
			return nil, fmt.Errorf("bench: open %s: %w", spec.name, err)
		}
		stores = append(stores, s)
	}
	return stores, nil
}

func closeStores(stores []*store) {
	for _, s := range stores {
		if s.eng != nil {
			s.eng.Close()
			s.eng = nil
		}
	}
}

// reopen closes a durable store, measures its files, and times opening it
// again up to the answer of a first Get.
func (s *store) reopen(keys int) error {
	if !s.spec.durable {
		return nil
	}
	if err := s.eng.Close(); err != nil {
		return err
	}
	s.eng = nil
	var err error
	if s.st.DiskBytes, err = diskBytes(s.dir); err != nil {
		return err
	}
	s.st.BytesPerKey = float64(s.st.DiskBytes) / float64(keys)
	eng := s.spec.new()
	k := keyAt(uint64(keys / 2))
	var v Value
	start := time.Now()
	if err := eng.Open(s.dir, keys); err != nil {
		return err
	}
	ok, err := eng.Get(&k, &v)
	s.st.Open = time.Since(start)
	s.eng = eng
	if err == nil && !ok {
		err = fmt.Errorf("key %s not found after reopening", k)
	}
	return err
}

// warm reads each of the keys once, in key order.
func (s *store) warm(keys int) error {
	var v Value
	for i := range keys {
		k := keyAt(uint64(i))
		if _, err := s.eng.Get(&k, &v); err != nil {
			return err
		}
	}
	return nil
}

// phase runs ops on every store, in rounds; quiet phases (the fill that
// builds the stores when fillrandom was not asked for) are not reported.
func (r *runner) phase(w workload, ops []op, stores []*store, quiet bool) error {
	lat := make([][]int64, len(stores))
	spent := make([]time.Duration, len(stores))
	for round := range r.cfg.Rounds {
		chunk := ops[round*len(ops)/r.cfg.Rounds : (round+1)*len(ops)/r.cfg.Rounds]
		for j := range stores {
			if err := r.stopped(); err != nil {
				return err
			}
			// The engine that goes first changes from round to round.
			i := (j + round) % len(stores)
			s := stores[i]
			if skip(w, s.spec) != "" {
				continue
			}
			writers := 1
			if w.writes {
				writers = s.spec.writers
			}
			before, _ := benchutil.ReadStatus()
			start := time.Now()
			l, err := runOps(s.eng, chunk, writers, uint64(round+1))
			spent[i] += time.Since(start)
			if err != nil {
				return fmt.Errorf("bench: %s on %s: %w", w.name, s.spec.name, err)
			}
			if after, _ := benchutil.ReadStatus(); w.fill && after.VmRSS > before.VmRSS {
				s.st.RSS += after.VmRSS - before.VmRSS
			}
			lat[i] = append(lat[i], l...)
		}
	}
	if quiet {
		return nil
	}
	for i, s := range stores {
		res := Result{Engine: s.spec.name, Workload: w.name, Ops: len(lat[i])}
		if res.Skipped = skip(w, s.spec); res.Skipped == "" {
			sortInt64(lat[i])
			res.OpsPerSec = float64(len(lat[i])) / spent[i].Seconds()
			res.P50, res.P99 = time.Duration(percentile(lat[i], 0.5)), time.Duration(percentile(lat[i], 0.99))
		}
		r.rep.Results = append(r.rep.Results, res)
	}
	return nil
}

// skip says why an engine does not run a workload, or "".
func skip(w workload, e engineSpec) string {
	switch {
	case w.ordered && !e.ordered:
		return "not ordered"
	case !w.writes && e.writers > 1:
		return "batches writes only"
	}
	return ""
}

// runOps runs ops on e and returns their latencies in nanoseconds; a
// pure-write slice is shared by writers goroutines.
func runOps(e Engine, ops []op, writers int, stamp uint64) ([]int64, error) {
	if writers <= 1 {
		return runSerial(e, ops, stamp)
	}
	var wg sync.WaitGroup
	lats := make([][]int64, writers)
	errs := make([]error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats[w], errs[w] = runSerial(e, ops[w*len(ops)/writers:(w+1)*len(ops)/writers], stamp)
		}()
	}
	wg.Wait()
	return slices.Concat(lats...), errors.Join(errs...)
}

func runSerial(e Engine, ops []op, stamp uint64) ([]int64, error) {
	lat := make([]int64, len(ops))
	var v Value
	bump := func(v *Value) { v[0]++ }
	for i, o := range ops {
		k := keyAt(o.key)
		if o.kind == opPut || o.kind == opInsert {
			valueFor(&v, o.key, stamp)
		}
		start := time.Now()
		var err error
		switch o.kind {
		case opGet:
			var ok bool
			if ok, err = e.Get(&k, &v); err == nil && !ok {
				err = fmt.Errorf("key %s not found", k)
			}
		case opPut, opInsert:
			err = e.Put(&k, &v)
		case opRMW:
			err = e.Update(&k, bump)
		case opScan:
			_, err = e.Scan(&k, 100)
		case opScanUpTo:
			_, err = e.Scan(&k, 1+int(mix64(o.key)%100))
		case opDelete:
			err = e.Delete(&k)
		}
		lat[i] = int64(time.Since(start))
		if err != nil {
			return lat[:i], err
		}
	}
	return lat, nil
}
