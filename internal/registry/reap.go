package registry

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// Reaping runs in batches. The runtime's cleanup for a collected payload
// only queues the object's ID; a drain goroutine, started when the queue
// stops being empty, takes what has queued and reaps it shard by shard,
// taking each shard's lock and the event hub's once for its part of the
// batch. At a million objects the per-object locking and the cleanup's
// own work were a third of a forced collection; and the one goroutine
// the runtime runs cleanups on (GOMAXPROCS/4 of them, at least one: see
// runtime/mcleanup.go) now only appends an ID, so the drain runs beside
// it on another core.
//
// Collect waits for the drain as well as for the cleanups (awaitReaps),
// so that its report and Stats right after it stay exact.

// reapQueue holds the IDs of collected objects not yet reaped, in
// blocks of reapBlock: a queue of a million grows by blocks, not by
// copying a slice of millions again and again (which cost 80 bytes of
// allocation per object), and a drain gives the blocks back.
type reapQueue struct {
	mu     sync.Mutex
	blocks [][]handle.ID // guarded by mu: queued, in the order they came
	free   [][]handle.ID // guarded by mu: empty blocks, at most reapFree
	// idle is, while a drain goroutine runs, the channel it closes as it
	// ends; nil when none runs. Guarded by mu.
	idle chan struct{}
}

const (
	reapBlock = 1024 // IDs per block: 16 KiB
	reapFree  = 64   // empty blocks kept between drains: 1 MiB
)

// reap is the cleanup run by the Go runtime after the collector took the
// payload of e. It runs on the runtime's cleanup goroutine: it queues e's
// ID and, if no drain runs, starts one. The drain finds the entry by its
// ID, as it may no longer be in its map (Delete, or a Pin that found it
// gone, removed it).
func (r *Registry) reap(e *entry) {
	id := e.id // immutable
	q := &r.reaps
	q.mu.Lock()
	n := len(q.blocks)
	if n == 0 || len(q.blocks[n-1]) == reapBlock {
		q.blocks = append(q.blocks, q.newBlock())
		n++
	}
	q.blocks[n-1] = append(q.blocks[n-1], id)
	start := q.idle == nil
	if start {
		q.idle = make(chan struct{})
	}
	q.mu.Unlock()
	if start {
		go r.drainReaps()
	}
}

// newBlock returns an empty block. q.mu is held.
func (q *reapQueue) newBlock() []handle.ID {
	if n := len(q.free); n > 0 {
		b := q.free[n-1]
		q.free[n-1] = nil
		q.free = q.free[:n-1]
		return b
	}
	return make([]handle.ID, 0, reapBlock)
}

// drainReaps reaps batches until the queue is empty, then ends.
func (r *Registry) drainReaps() {
	q := &r.reaps
	var spare [][]handle.ID
	var sorted, scratch []handle.ID // the batch grouped by shard; go with the drain
	for {
		q.mu.Lock()
		batch := q.blocks
		if len(batch) == 0 {
			close(q.idle)
			q.idle = nil
			q.mu.Unlock()
			return
		}
		q.blocks = spare[:0]
		q.mu.Unlock()

		// Group the batch by shard in one pass and one buffer.
		var start [shardCount + 1]int
		total := 0
		for _, b := range batch {
			total += len(b)
			for _, id := range b {
				start[id[0]&(shardCount-1)+1]++ // as Registry.shard
			}
		}
		largest := 0 // the largest shard's part: sortIDs's scratch
		for i := range shardCount {
			largest = max(largest, start[i+1])
			start[i+1] += start[i]
		}
		scratch = slices.Grow(scratch[:0], largest)[:largest]
		sorted = slices.Grow(sorted[:0], total)[:total]
		at := start
		for _, b := range batch {
			for _, id := range b {
				i := id[0] & (shardCount - 1)
				sorted[at[i]] = id
				at[i]++
			}
		}
		now := r.now()
		for i := range shardCount {
			if ids := sorted[start[i]:start[i+1]]; len(ids) > 0 {
				r.reapShard(&r.shards[i], ids, scratch[:len(ids)], now)
			}
		}

		q.mu.Lock()
		for i, b := range batch {
			if len(q.free) < reapFree {
				q.free = append(q.free, b[:0])
			}
			batch[i] = nil
		}
		q.mu.Unlock()
		spare = batch
	}
}

// reapChunk is how many of a shard's batch reapShard looks up before it
// reaps them: a few hundred entries stay in cache between the passes.
const reapChunk = 128

// reapShard reaps the objects ids of shard s, taking its lock once per
// chunk: a batch of a million must not keep a shard's readers waiting for
// its whole part. The IDs are taken in order, so that consecutive deletes
// walk the table's slots, kept in ID order, from its start to its end. Each chunk is first looked up
// and its entries' strong pointers read in tight loops of their own: at
// a million objects every entry is a cache miss, and loops that do
// nothing else let the processor wait for many of them at once, where
// reapLocked's work between them would serialise the waits.
func (r *Registry) reapShard(s *shard, ids, scratch []handle.ID, now time.Time) {
	sortIDs(ids, scratch)
	for len(ids) > 0 {
		part := ids[:min(len(ids), reapChunk)]
		ids = ids[len(part):]
		r.reapChunk(s, part, now)
	}
}

// reapChunk reaps ids, at most reapChunk of them, under s.mu.
func (r *Registry) reapChunk(s *shard, ids []handle.ID, now time.Time) {
	var chunk [reapChunk]*entry // on the stack: the chunk's entries
	s.lock()
	defer s.unlock()
	found := chunk[:0]
	for _, id := range ids {
		found = append(found, s.m.get(id))
	}
	dead := chunk[:0] // filtered in place
	for _, e := range found {
		// The runtime queues the cleanup only once the payload is
		// unreachable, so its weak pointer is nil: there is nothing to
		// check but that the entry is still there (Delete, or a Pin that
		// found it gone, may have removed it) and unpinned.
		if e != nil && e.strong == nil {
			dead = append(dead, e)
		}
	}
	s.leaks.leaveWeak(dead)  // one book lock for the chunk
	var evs [reapChunk]Event // on the stack: one hub lock for the chunk
	for i, e := range dead {
		evs[i] = r.collectedLocked(s, e, now)
	}
	r.emitAll(evs[:len(dead)])
}

// sortIDs sorts ids bytewise, as the index orders them; scratch is as
// long as ids. IDs are random, so a radix sort by their first four bytes
// leaves almost no ties for the insertion pass that finishes it: O(n),
// where slices.SortFunc's comparisons were a fifth of a reap of a million.
func sortIDs(ids, scratch []handle.ID) {
	if len(ids) < 64 {
		slices.SortFunc(ids, compareIDs)
		return
	}
	src, dst := ids, scratch
	for b := 3; b >= 0; b-- { // least significant first; four passes end in ids
		var at [257]int
		for i := range src {
			at[int(src[i][b])+1]++
		}
		for i := range 256 {
			at[i+1] += at[i]
		}
		for i := range src {
			k := src[i][b]
			dst[at[k]] = src[i]
			at[k]++
		}
		src, dst = dst, src
	}
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && compareIDs(ids[j-1], ids[j]) > 0; j-- {
			ids[j-1], ids[j] = ids[j], ids[j-1]
		}
	}
}

// compareIDs orders IDs bytewise, as the index does.
func compareIDs(a, b handle.ID) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return cmp.Compare(binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:]))
}

// awaitReaps waits until every reap queued so far has run, or until
// deadline. The caller has waited for the cleanups that queue them.
func (r *Registry) awaitReaps(deadline time.Time) {
	q := &r.reaps
	q.mu.Lock()
	idle := q.idle
	q.mu.Unlock()
	if idle == nil {
		return
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

// reapLocked removes a collected object and publishes its COLLECTED event.
// The caller holds s.mu and has seen e's weak pointer go nil.
func (r *Registry) reapLocked(s *shard, e *entry, now time.Time) {
	s.leaks.setWeak(e, false)
	ev := r.collectedLocked(s, e, now)
	r.emit(&ev)
}

// emitAll is emit for events of one shard's objects, in order. The caller
// holds that shard's lock.
func (r *Registry) emitAll(evs []Event) {
	r.events.publishAll(evs)
	if r.observe != nil {
		for i := range evs {
			r.observe(evs[i].withHandle())
		}
	}
}

// collectedLocked removes a collected object and returns its COLLECTED
// event, for the caller to publish before it lets go of s.mu. The caller
// has taken e out of the leak book (leaveWeak or setWeak).
func (r *Registry) collectedLocked(s *shard, e *entry, now time.Time) Event {
	unpinned := e.unpinnedSince() // before stateSince changes
	s.m.del(e.id)
	r.counters.add(e.state, -1, -e.size)
	r.accounts.release(e.owner)
	r.counters.collected.Add(1)
	r.counters.collectedBytes.Add(e.size)
	e.state = Collected
	e.stateSince = now.UnixNano()
	ev := r.event(e, "", EventCollected, "", now)
	ev.codec, ev.mac = r.codec, e.mac // the handle, formatted if delivered
	ev.UnpinnedFor = time.Duration(now.UnixNano() - unpinned)
	return ev
}
