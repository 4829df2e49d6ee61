package registry

import (
	"sync"
	"sync/atomic"

	"github.com/weakref/registry/internal/auth"
)

// LimitIdentityPinnedBytes names the limit per identity on strongly held
// bytes, as in stats and RESOURCE_EXHAUSTED reasons.
const LimitIdentityPinnedBytes = "IDENTITY_PINNED_BYTES_LIMIT"

// account is one identity's, shared by every object it owns and every
// charge it pays: an object costs one pointer to it, never a copy of the
// name. It is kept while something refers to it, and forgotten at zero, so
// that the accounts do not grow with the identities ever seen.
type account struct {
	name string
	refs atomic.Int64 // objects owning it plus charges held on it
	held atomic.Int64 // bytes charged to it: objects strongly held by its acts
}

// accounts interns the accounts by name.
type accounts struct {
	mu sync.RWMutex
	m  map[string]*account // guarded by mu
}

// acquire returns name's account with one more reference; nil for no
// name.
func (as *accounts) acquire(name string) *account {
	if name == "" {
		return nil
	}
	as.mu.RLock()
	a := as.m[name]
	if a != nil {
		a.refs.Add(1) // under the read lock: release cannot forget it now
	}
	as.mu.RUnlock()
	if a != nil {
		return a
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.m == nil {
		as.m = make(map[string]*account)
	}
	a = as.m[name]
	if a == nil {
		a = &account{name: name}
		as.m[name] = a
	}
	a.refs.Add(1)
	return a
}

// release drops one reference to a, forgetting it at zero.
func (as *accounts) release(a *account) {
	if a == nil || a.refs.Add(-1) > 0 {
		return
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if a.refs.Load() == 0 && as.m[a.name] == a {
		delete(as.m, a.name)
	}
}

// count returns how many accounts are kept, for tests.
func (as *accounts) count() int {
	as.mu.RLock()
	defer as.mu.RUnlock()
	return len(as.m)
}

// reserveStrong accounts size more strongly held bytes, globally and to
// the account of identity who (none for "" or auth.AnonymousName), or
// fails, changing nothing, if that would pass MaxPinnedBytes or
// MaxPinnedBytesPerIdentity. It returns the account charged, to be given
// back to releaseStrong exactly once.
func (r *Registry) reserveStrong(size int64, who string) (*account, error) {
	limit := r.cfg.MaxPinnedBytes
	for {
		cur := r.held.Load()
		if limit > 0 && cur+size > limit {
			return nil, &LimitError{Limit: LimitPinnedBytes, Max: limit, Want: cur + size}
		}
		if r.held.CompareAndSwap(cur, cur+size) {
			break
		}
	}
	if who == "" || who == auth.AnonymousName {
		return nil, nil
	}
	a := r.accounts.acquire(who)
	limit = r.cfg.MaxPinnedBytesPerIdentity
	for {
		cur := a.held.Load()
		if limit > 0 && cur+size > limit {
			r.held.Add(-size)
			r.accounts.release(a)
			return nil, &LimitError{Limit: LimitIdentityPinnedBytes, Max: limit, Want: cur + size, Identity: who}
		}
		if a.held.CompareAndSwap(cur, cur+size) {
			return a, nil
		}
	}
}

// releaseStrong gives back what reserveStrong took for size bytes.
func (r *Registry) releaseStrong(size int64, a *account) {
	r.held.Add(-size)
	if a != nil {
		a.held.Add(-size)
		r.accounts.release(a)
	}
}

// takeCharge returns the account e's bytes are charged to and forgets it:
// the caller releases it. The caller holds e's shard lock.
func takeCharge(e *entry) *account {
	a := e.chargedTo()
	e.dropCharge()
	return a
}

// IdentityHeld returns the strongly held bytes charged to identity name,
// and whether it has an account at all (for tests and invariant checks).
func (r *Registry) IdentityHeld(name string) (int64, bool) {
	r.accounts.mu.RLock()
	defer r.accounts.mu.RUnlock()
	a := r.accounts.m[name]
	if a == nil {
		return 0, false
	}
	return a.held.Load(), true
}

// HeldBytes returns the payload bytes held strongly on leases' behalf:
// pinned, lingering and handed off (not the soft cache's).
func (r *Registry) HeldBytes() int64 { return r.held.Load() }
