package remote

import "sync"

// job is a request waiting for a node worker. Its payload is its own copy.
type job struct {
	c   *srvConn
	f   frame
	low bool
}

// queues holds the node's pending requests: demand reads in the high
// queue, write-backs and prefetches in the low one. A worker takes from
// the high queue first, but after starve high jobs in a row it takes a low
// one if any waits, so that a stream of faults cannot hold write-backs
// (and the commits waiting on them) back forever. With fifo set there is
// one queue in arrival order, for comparison.
type queues struct {
	mu        sync.Mutex
	cond      sync.Cond
	high, low []job
	fifo      bool
	starve    int
	streak    int
	closed    bool
	// lowBusy is set while a worker serves a low job: they are served one
	// at a time, so that write-backs apply in the order they arrived.
	lowBusy bool
	// inline counts the demand reads being served outside the queues.
	inline int
}

func newQueues(fifo bool, starve int) *queues {
	q := &queues{fifo: fifo, starve: max(starve, 1)}
	q.cond.L = &q.mu
	return q
}

func (q *queues) push(j job) {
	q.mu.Lock()
	if q.fifo || !j.low {
		q.high = append(q.high, j)
	} else {
		q.low = append(q.low, j)
	}
	q.mu.Unlock()
	q.cond.Signal()
}

// pop waits for a job; it reports false once the queues are closed. The
// caller calls done with the job once served.
func (q *queues) pop() (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.closed {
			return job{}, false
		}
		lowReady := len(q.low) > 0 && !q.lowBusy
		if len(q.high) > 0 && (!lowReady || q.streak < q.starve) {
			q.streak++
			return shift(&q.high), true
		}
		if lowReady {
			q.streak = 0
			q.lowBusy = true
			return shift(&q.low), true
		}
		q.cond.Wait()
	}
}

// done marks j served.
func (q *queues) done(j job) {
	if !j.low || q.fifo {
		return
	}
	q.mu.Lock()
	q.lowBusy = false
	q.mu.Unlock()
	q.cond.Signal()
}

func shift(s *[]job) job {
	j := (*s)[0]
	(*s)[0] = job{}
	*s = (*s)[1:]
	if len(*s) == 0 {
		*s = (*s)[:0:0]
	}
	return j
}

// tryInline reports whether a demand read may be served at once on its
// connection's goroutine: no demand read waits before it and fewer than
// limit are being served so. The caller calls doneInline after.
func (q *queues) tryInline(limit int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fifo || len(q.high) > 0 || q.inline >= limit {
		return false
	}
	q.inline++
	return true
}

func (q *queues) doneInline() {
	q.mu.Lock()
	q.inline--
	q.mu.Unlock()
}

// depths returns the number of jobs in each queue.
func (q *queues) depths() (high, low int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.high), len(q.low)
}

func (q *queues) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
