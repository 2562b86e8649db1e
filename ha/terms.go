package ha

import (
	"errors"
	"sync"
	"time"
)

// termSet holds the terms a coordinator granted in this process and runs
// their renewals, so that Close can end them all and wait.
type termSet struct {
	mu     sync.Mutex
	closed bool
	terms  map[*Term]struct{}
	wg     sync.WaitGroup
}

// isClosed reports whether close was called.
func (s *termSet) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// run registers t and, in a goroutine, calls renew every period with the
// renewal's start time, while t has not expired and its renewals are not
// paused, until stop closes; onStop, if set, runs then.
func (s *termSet) run(t *Term, period time.Duration, stop <-chan struct{}, renew func(start time.Time), onStop func()) {
	s.mu.Lock()
	if s.terms == nil {
		s.terms = map[*Term]struct{}{}
	}
	s.terms[t] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.terms, t)
			s.mu.Unlock()
			s.wg.Done()
		}()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				if onStop != nil {
					onStop()
				}
				return
			case now := <-tick.C:
				if t.expire(now) || t.paused.Load() {
					continue
				}
				renew(time.Now())
			}
		}
	}()
}

// close ends every term, which fences their heaps, and waits until their
// renewals stopped.
func (s *termSet) close() {
	s.mu.Lock()
	s.closed = true
	terms := make([]*Term, 0, len(s.terms))
	for t := range s.terms {
		terms = append(terms, t)
	}
	s.mu.Unlock()
	for _, t := range terms {
		t.end(errors.New("coordinator closed"))
	}
	s.wg.Wait()
}
