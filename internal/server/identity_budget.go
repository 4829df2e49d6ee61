package server

import (
	"context"
	"sync"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/registry"
)

// identityBudget bounds what each identity holds at once of one resource:
// its uploads' bytes in flight, or its open streams. It is the
// per-identity twin of byteBudget, checked beside it, so that one
// identity cannot take all of a global limit and lock the others out.
//
// Only identities holding something have an entry: an entry is deleted
// when its use falls to 0, so the map grows with the identities active
// now, never with those seen. The anonymous identity (auth off) is never
// bounded: alone, the global limits are its limits. A nil budget, or one
// of max 0, bounds nothing. Safe for concurrent use.
type identityBudget struct {
	limit string // the reason a refusal names
	max   int64

	mu   sync.Mutex
	used map[string]int64 // guarded by mu; no entry at 0
}

func newIdentityBudget(limit string, limitMax int64) *identityBudget {
	if limitMax <= 0 {
		return nil
	}
	return &identityBudget{limit: limit, max: limitMax, used: make(map[string]int64)}
}

// reserve takes n for the identity of ctx's call, or fails with a
// *registry.LimitError naming the identity if that would pass max. It
// returns the function that gives n back, to call once, whatever the path.
func (b *identityBudget) reserve(ctx context.Context, n int64) (release func(), err error) {
	name := auth.FromContext(ctx).Name
	if b == nil || name == auth.AnonymousName {
		return func() {}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.used[name]
	if cur+n > b.max {
		return nil, &registry.LimitError{Limit: b.limit, Max: b.max, Want: cur + n, Identity: name}
	}
	b.used[name] = cur + n
	var once sync.Once
	return func() { once.Do(func() { b.release(name, n) }) }, nil
}

func (b *identityBudget) release(name string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if left := b.used[name] - n; left > 0 {
		b.used[name] = left
	} else {
		delete(b.used, name)
	}
}

// holders returns how many identities hold something now.
func (b *identityBudget) holders() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.used)
}
