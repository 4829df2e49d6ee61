package registry

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// softCache keeps the most recently resolved objects strongly held, up to
// a budget of payload bytes, as a weak-value cache with a strong LRU in
// front of it would. It holds the payload, not the entry's state: a cached
// object's state is what it would be without the cache (usually WEAK), and
// it is collected once the cache lets go of it and nothing else holds it.
//
// Lock order: a shard's mu, then the cache's mu. Resolve touches the cache
// after releasing its shard lock.
type softCache struct {
	max  int64
	book func(*entry) *leakBook // the leak book of an entry's shard

	mu    sync.Mutex               // guards lru, elems and bytes
	lru   list.List                // of *cached, most recently resolved first
	elems map[*entry]*list.Element // the cached entries' elements in lru: kept here, not in every entry
	bytes int64

	hits      atomic.Int64
	evictions atomic.Int64
}

// cached is one object the cache holds: p is the strong reference.
type cached struct {
	e *entry
	p *payload
}

func newSoftCache(limit int64, book func(*entry) *leakBook) *softCache {
	return &softCache{max: limit, book: book, elems: make(map[*entry]*list.Element)}
}

// touch records that e was resolved: it moves to the front, or comes in,
// evicting the least recently resolved objects until it fits. An object
// larger than the whole budget is not taken in. It returns whether the
// cache holds e now.
func (c *softCache) touch(e *entry, p *payload) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.elems[e]; el != nil {
		c.lru.MoveToFront(el)
		c.hits.Add(1)
		return true
	}
	if e.has(flagRemoved) || e.size > c.max {
		return false
	}
	for c.bytes+e.size > c.max {
		c.evictLocked(c.lru.Back())
	}
	c.elems[e] = c.lru.PushFront(&cached{e: e, p: p})
	c.bytes += e.size
	e.set(flagCached, true)
	c.book(e).setCached(e, true)
	return true
}

// remove lets go of e, if the cache holds it: it was deleted.
func (c *softCache) remove(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.elems[e]; el != nil {
		c.dropLocked(el)
	}
}

func (c *softCache) evictLocked(el *list.Element) {
	c.dropLocked(el)
	c.evictions.Add(1)
}

func (c *softCache) dropLocked(el *list.Element) {
	it := el.Value.(*cached)
	c.lru.Remove(el)
	c.bytes -= it.e.size
	delete(c.elems, it.e)
	it.e.set(flagCached, false)
	c.book(it.e).setCached(it.e, false) // a WEAK object's weak age starts now
}

// SoftCacheStats are the soft cache's figures.
type SoftCacheStats struct {
	MaxBytes  int64
	Bytes     int64
	Objects   int64
	Hits      int64
	Evictions int64
}

func (c *softCache) stats() SoftCacheStats {
	if c == nil {
		return SoftCacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return SoftCacheStats{
		MaxBytes:  c.max,
		Bytes:     c.bytes,
		Objects:   int64(c.lru.Len()),
		Hits:      c.hits.Load(),
		Evictions: c.evictions.Load(),
	}
}
