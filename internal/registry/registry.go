// Package registry keeps objects in memory under handles, holding each one
// strongly while a lease pins it and only weakly otherwise, so that the Go
// garbage collector reclaims what nobody pins.
//
// Collection is real garbage collection: an unpinned object's payload is
// referenced only by a weak.Pointer, and runtime.AddCleanup tells the
// registry when the collector took it. The registry publishes every
// lifecycle change as an Event.
//
// The registry knows leases only as Holders: the lease package decides who
// pins what, and the registry counts and keeps the pins.
package registry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/weakref/registry/internal/handle"
)

const shardCount = 64 // a power of two; handle IDs are random, so shards fill evenly

// Config configures a Registry. The zero value of each limit means no
// limit.
type Config struct {
	// Codec mints and verifies object handles. Required.
	Codec *handle.Codec
	// MaxObjectBytes is the largest payload accepted.
	MaxObjectBytes int64
	// MaxPinnedBytes bounds the bytes held strongly on leases' behalf:
	// pinned, lingering and handed off, summed over objects (an object
	// counts once however many leases pin it), each object's payload with
	// its metadata (entry.charge). The soft cache has its own budget.
	MaxPinnedBytes int64
	// MaxPinnedBytesPerIdentity bounds the part of those bytes charged to
	// one identity: an object's bytes are charged to the identity whose
	// act made it strongly held (its Put with a lease or a linger, or its
	// lease's Pin of a WEAK object) until it is WEAK again. Never applied
	// to auth.AnonymousName.
	MaxPinnedBytesPerIdentity int64
	// Tombstones is how many deleted handles are remembered, to answer
	// ErrDeleted rather than ErrCollected. Default 10000; negative
	// remembers none.
	Tombstones int
	// WatchBuffer is how many events a subscriber may fall behind before it
	// is dropped with ErrWatchTooSlow. Default 1024.
	WatchBuffer int
	// MaxWatchers bounds the open Watch and WatchAll subscriptions, each of
	// which may hold WatchBuffer events; one more is refused with a
	// *LimitError for WATCHER_LIMIT. Zero: no limit.
	MaxWatchers int
	// WatchHistory is how many of the latest events are kept for watches
	// that resume from a sequence (WatchFrom, WatchAllFrom). Default 10000;
	// negative keeps none.
	WatchHistory int
	// Now returns the current time; tests may set it. Default time.Now.
	// Linger and hand-off deadlines are compared on the monotonic clock
	// when its times carry one, as time.Now's do.
	Now func() time.Time
	// LeakGCCycles, when positive, is how many garbage collections a WEAK
	// object may survive before it is reported as a suspected leak (at
	// most MaxLeakGCCycles). Its weak age starts when it becomes WEAK, or
	// when the soft cache lets go of it.
	LeakGCCycles int
	// CollectMinInterval is the least time between the starts of two
	// forced collections (Collect); a collection also waits four times as
	// long as the last one took, so that forced collections take at most a
	// fifth of the time however often they are asked for. Callers who ask
	// while one is running or waiting share the next one. Zero: only the
	// four times.
	CollectMinInterval time.Duration
	// OwnedPayloads promises that every payload given to Put and
	// PutPayload is an allocation of its own, which nothing else keeps
	// (a gRPC request's bytes are). The registry then attaches the weak
	// pointer and cleanup of a payload in one slice of at least 64 bytes
	// straight to it rather than to a box around it, saving 128 bytes an
	// object. A payload that breaks the promise is not unsafe: it is only
	// collected once nothing at all holds its allocation.
	OwnedPayloads bool
	// SoftCacheBytes, when positive, keeps the most recently resolved
	// objects strongly held, up to this many payload bytes, so that an
	// unpinned object in use is not collected between two resolves. The
	// least recently resolved go first.
	SoftCacheBytes int64
	// Observe, when set, is called with every event the registry
	// publishes (never CURRENT), numbered, in the order of Seq for each
	// object. It is called synchronously, with the object's shard lock
	// held, on the goroutine that made the change or on the one that
	// reaps collected objects: it must be quick, must not block, and
	// must not call the Registry. It exists for metrics and tracing; nil
	// costs nothing.
	Observe func(Event)
}

// Registry holds objects. All methods are safe for concurrent use.
// Resolve and Stat of a live object take no lock (see peek), or one shard's
// read lock when a writer is at work in that shard; changes take one
// shard's write lock and, briefly, the event hub's lock to number and fan
// out their events.
//
// The runtime keeps a Registry reachable while any of its objects' cleanups
// is pending, so a registry is meant to live as long as its process.
type Registry struct {
	codec   *handle.Codec
	cfg     Config
	now     func() time.Time // clock.now: the exact clock
	clock   *coarseClock
	observe func(Event) // cfg.Observe; nil when none
	shards  [shardCount]shard
	events  *hub
	tombs   *tombstones
	cache   *softCache   // nil when off
	reapFn  func(*entry) // r.reap, made once: a method value per Put costs 16 bytes an object

	counters counters
	forced   forcedCollections
	reaps    reapQueue

	// held is the strongly held bytes (see Config.MaxPinnedBytes), changed
	// only by reserveStrong and releaseStrong; accounts are the owners'
	// and payers'.
	held     atomic.Int64
	accounts accounts
}

// shard is one slice of the object map.
type shard struct {
	mu sync.RWMutex
	// seq counts mu's write locks taken and released: it is odd while
	// one is held. Every change to m or to its entries is made between
	// lock and unlock, so that a Resolve may read them without mu and
	// trust what it read if seq was even and the same before and after
	// (peek).
	seq   atomic.Uint64
	m     entryTable // guarded by mu: its entries, by ID and in ID order (for List)
	leaks leakBook   // its own lock: the soft cache changes it too
	_     [24]byte   // 128 bytes: neighbouring shards' locks on cache lines of their own
}

// lock takes s's write lock. Every writer of s's table or entries locks
// with it, not with mu, so that peek sees the change.
func (s *shard) lock() {
	s.mu.Lock() // the one direct write lock (TestShardWritersGoThroughLock)
	s.seq.Add(1)
}

// unlock releases what lock took.
func (s *shard) unlock() {
	s.seq.Add(1)
	s.mu.Unlock()
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	if cfg.Codec == nil {
		panic("registry: Config.Codec is required")
	}
	if cfg.Tombstones == 0 {
		cfg.Tombstones = 10000
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = 1024
	}
	if cfg.WatchHistory == 0 {
		cfg.WatchHistory = 10000
	}
	clock := newCoarseClock(cfg.Now)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.LeakGCCycles = min(cfg.LeakGCCycles, MaxLeakGCCycles)
	r := &Registry{
		codec:   cfg.Codec,
		cfg:     cfg,
		now:     clock.now,
		clock:   clock,
		observe: cfg.Observe,
		events:  newHub(cfg.WatchBuffer, cfg.WatchHistory, cfg.MaxWatchers),
		tombs:   newTombstones(cfg.Tombstones),
	}
	r.reapFn = r.reap
	for i := range r.shards {
		r.shards[i].leaks.init(cfg.LeakGCCycles)
	}
	if cfg.SoftCacheBytes > 0 {
		r.cache = newSoftCache(cfg.SoftCacheBytes, func(e *entry) *leakBook { return &r.shard(e.id).leaks })
	}
	return r
}

// Close ends every subscription. Objects stay resolvable; Close exists so
// that watchers learn the registry is going away.
func (r *Registry) Close() {
	r.clock.close()
	r.events.close()
}

func (r *Registry) shard(id handle.ID) *shard {
	return &r.shards[id[0]&(shardCount-1)]
}

// Epoch returns this run's epoch: the one in its handles and lease ids,
// and the one its event sequences belong to.
func (r *Registry) Epoch() uint64 { return r.codec.Epoch() }

// Parse verifies an object handle and returns its ID. Errors are those of
// handle.Codec.Parse.
//
// A handle of a live object is recognised without its MAC (see issued);
// any other string pays for the MAC, which alone tells why it names no
// object here.
func (r *Registry) Parse(h string) (handle.ID, error) {
	if id, mac, ok := r.codec.Split(handle.Object, h); ok {
		s := r.shard(id)
		var v entryView
		if e, ok := s.peek(id, &v); ok && e.issued(mac) {
			return id, nil
		}
		s.mu.RLock()
		e := s.m.get(id)
		hit := e != nil && e.issued(mac)
		s.mu.RUnlock()
		if hit {
			return id, nil
		}
	}
	return r.codec.Parse(handle.Object, h)
}

// handleOf returns e's handle string, made again from the ID and tag e
// keeps: an entry keeps 30 bytes of handle, not a 56-byte string and its
// header.
func (r *Registry) handleOf(e *entry) string {
	return r.codec.FormatMAC(handle.Object, e.id, e.mac)
}

// publish sends e's event; h is its handle. The caller holds e's shard
// lock.
func (r *Registry) publish(e *entry, h string, kind EventKind, lease string, now time.Time) {
	ev := r.event(e, h, kind, lease, now)
	r.emit(&ev)
}

// emit numbers ev, delivers it to subscribers, then to the observer. The
// caller holds ev's object's shard lock.
func (r *Registry) emit(ev *Event) {
	ev.Seq = r.events.publish(ev)
	if r.observe != nil {
		r.observe(ev.withHandle())
	}
}

func (r *Registry) event(e *entry, h string, kind EventKind, lease string, now time.Time) Event {
	return Event{
		Kind:    kind,
		ID:      e.id,
		Handle:  h,
		State:   e.state,
		Pins:    int(e.npins),
		Size:    e.size,
		LeaseID: lease,
		Time:    now,
	}
}
