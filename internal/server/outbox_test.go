package server

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// An idle stream's outbox holds no goroutine: the sender runs while
// messages come and ends when none has for its linger. Ten thousand idle lease
// streams would otherwise hold ten thousand sender stacks.
func TestIdleOutboxHoldsNoGoroutine(t *testing.T) {
	const n = 200
	var (
		mu   sync.Mutex
		sent = map[int][]int{}
	)
	boxes := make([]*outbox[int], n)
	before := runtime.NumGoroutine()
	for i := range boxes {
		boxes[i] = newOutbox(func(m int) error {
			mu.Lock()
			sent[i] = append(sent[i], m)
			mu.Unlock()
			return nil
		}, time.Minute)
		boxes[i].linger = time.Millisecond
	}
	never := make(chan struct{})
	ctx := context.Background()
	// Two bursts with a pause between, so that each sender ends and a
	// new one starts for the second: every message arrives, in order.
	for burst := range 2 {
		for _, o := range boxes {
			for k := range 3 {
				if err := o.send(ctx, burst*3+k, never); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitFor(t, 10*time.Second, "every sender to end", func() bool {
			for _, o := range boxes {
				if !o.idle() || o.running.Load() {
					return false
				}
			}
			return true
		})
		if got := runtime.NumGoroutine(); got > before+n/10 {
			t.Fatalf("%d goroutines with %d idle outboxes, %d before: senders stay", got, n, before)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range boxes {
		if want := []int{0, 1, 2, 3, 4, 5}; !slices.Equal(sent[i], want) {
			t.Fatalf("outbox %d sent %v, want %v", i, sent[i], want)
		}
	}
}

// Flush after the sender went idle still delivers what is queued and
// reports the end: exited closes once the queue is drained.
func TestOutboxFlushAfterIdleDeliversAndEnds(t *testing.T) {
	var got []int
	o := newOutbox(func(m int) error { got = append(got, m); return nil }, time.Minute)
	o.linger = time.Millisecond
	never := make(chan struct{})
	if err := o.send(context.Background(), 1, never); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the sender to end", func() bool { return !o.running.Load() })
	if !o.offer(2) {
		t.Fatal("offer to an empty outbox failed")
	}
	if err := o.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("sent %v, want [1 2]", got)
	}
}
