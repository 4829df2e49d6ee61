package server

import (
	"sync"
)

// inflight counts the handlers running, so that Shutdown can tell the
// calls still being served from answers merely waiting to be delivered.
type inflight struct {
	mu      sync.Mutex
	n       int             // guarded by mu
	waiters []chan struct{} // guarded by mu; closed when n reaches 0
}

func newInflight() *inflight { return &inflight{} }

func (f *inflight) enter() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		for _, w := range f.waiters {
			close(w)
		}
		f.waiters = nil
	}
}

// idle returns a channel closed when no handler is running.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
	} else {
		f.waiters = append(f.waiters, ch)
	}
	return ch
}

// running returns how many handlers are running.
func (f *inflight) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
