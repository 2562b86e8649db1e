package remote

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Problem is damage found in a memory node's files.
type Problem struct {
	// Region names the region.
	Region string `json:"region"`
	// Offset is the region offset of the damaged page, or -1 when the
	// problem is not one page's (a region set aside, a writer file).
	Offset int64 `json:"offset"`
	// Err says what is wrong.
	Err string `json:"error"`
}

func (p Problem) String() string {
	if p.Offset < 0 {
		return fmt.Sprintf("region %s: %s", p.Region, p.Err)
	}
	return fmt.Sprintf("region %s, offset %d: %s", p.Region, p.Offset, p.Err)
}

// maxScrubProblems bounds the problems a scrub request answers with, so
// that the reply fits in a frame.
const maxScrubProblems = 10000

const pageMismatch = "the page does not match its checksum"

// check compares every page of the region with its checksum, reading
// with pread, and calls fn with each page that differs. A page met
// between its bytes and its checksum by a write-back is checked again
// with none in progress.
func (r *region) check(fn func(Problem)) error {
	return forEachPage(r.f, 0, r.size/PageSize, func(p uint64, page []byte) error {
		if sumMatches(r.sums, p, page) {
			return nil
		}
		if r.checkPage(p) != nil {
			fn(Problem{Region: r.name, Offset: int64(p * PageSize), Err: pageMismatch})
		}
		return nil
	})
}

// sumMatches reports whether page p, whose bytes are page (nil for a
// hole of a sparse file), matches its checksum.
func sumMatches(s *sums, p uint64, page []byte) bool {
	if page == nil {
		return s.get(p) == 0
	}
	return pageSum(page) == s.get(p)
}

// Scrub checks every region the node holds, while it serves them, and
// calls fn with each problem: the regions set aside at start, writer
// files that do not check, pages that do not match their checksums.
func (n *Node) Scrub(fn func(Problem)) error {
	n.mu.Lock()
	var aside []Problem
	for name, err := range n.aside {
		aside = append(aside, Problem{Region: name, Offset: -1, Err: "set aside: " + err.Error()})
	}
	regions := append([]*region(nil), n.byID...)
	n.mu.Unlock()
	sort.Slice(aside, func(i, j int) bool { return aside[i].Region < aside[j].Region })
	for _, p := range aside {
		fn(p)
	}
	for _, r := range regions {
		if _, err := readWriterFile(metaPath(r.dir, r.name)); err != nil {
			fn(writerProblem(r.name, err))
		}
		if err := r.check(fn); err != nil {
			return fmt.Errorf("scrub region %s: %w", r.name, err)
		}
	}
	return nil
}

// scrubReply answers a scrub request: the problems found, at most
// maxScrubProblems of them, as JSON.
func (n *Node) scrubReply() ([]byte, error) {
	problems := []Problem{}
	more := 0
	err := n.Scrub(func(p Problem) {
		if len(problems) < maxScrubProblems {
			problems = append(problems, p)
		} else {
			more++
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrNodeFailed)
	}
	if more > 0 {
		problems = append(problems, Problem{Offset: -1, Err: fmt.Sprintf("%d more problems not listed", more)})
	}
	return json.Marshal(problems)
}

// ScrubNode asks the memory node at addr, over TLS unless cfg is nil, to
// check every region it holds, and returns the problems it found.
func ScrubNode(ctx context.Context, addr string, cfg *tls.Config) ([]Problem, error) {
	cl, err := dial(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	f, err := cl.do(ctx, tScrub, 0, nil, nil)
	if err == nil {
		err = expect(f, tStatusReply)
	}
	if err != nil {
		return nil, err
	}
	var problems []Problem
	if err := json.Unmarshal(f.payload, &problems); err != nil {
		return nil, fmt.Errorf("memory node scrub: %w: %w", err, ErrProtocol)
	}
	return problems, nil
}

// ScrubDir checks the files of a memory node's directory, which no node
// may be serving (a write-back in progress would look like damage), and
// calls fn with each problem: region files of a bad size, missing or
// damaged checksum files and writer files, pages that do not match their
// checksums. The pages of a write-back a crash interrupted are not
// checked (the node takes them as they are at its next start).
func ScrubDir(dir string, fn func(Problem)) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.region"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	sort.Strings(paths)
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".region")
		if CheckName(name) != nil {
			continue
		}
		if err := scrubRegionFiles(dir, name, fn); err != nil {
			return fmt.Errorf("scrub region %s: %w", name, err)
		}
	}
	return nil
}

// scrubRegionFiles checks the files of one region; it returns an error
// only when it cannot read them.
func scrubRegionFiles(dir, name string, fn func(Problem)) error {
	report := func(off int64, err error) { fn(Problem{Region: name, Offset: off, Err: err.Error()}) }
	if _, err := readWriterFile(metaPath(dir, name)); err != nil {
		fn(writerProblem(name, err))
	}
	f, err := os.Open(regionPath(dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := regionFileSize(f)
	if err != nil {
		report(-1, err)
		return nil
	}
	s, err := openSums(dir, name, uint64(size)/PageSize, os.O_RDONLY)
	if errors.Is(err, os.ErrNotExist) {
		report(-1, errors.New("no checksum file: the node makes one from the region's bytes, unchecked, at its next start"))
		return nil
	}
	if err != nil {
		report(-1, err)
		return nil
	}
	defer s.close()
	inFlight := map[uint64]bool{}
	for _, pr := range s.intent() {
		for p := pr[0]; p < pr[1]; p++ {
			inFlight[p] = true
		}
	}
	return forEachPage(f, 0, uint64(size)/PageSize, func(p uint64, page []byte) error {
		if !inFlight[p] && !sumMatches(s, p, page) {
			fn(Problem{Region: name, Offset: int64(p * PageSize), Err: pageMismatch})
		}
		return nil
	})
}
