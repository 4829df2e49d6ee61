package server

import (
	"sync/atomic"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/registry"
)

// LimitUploadBytes is the limit on bytes that uploads in flight hold.
var LimitUploadBytes = registryv1.ErrorReason_UPLOAD_BYTES_LIMIT.String()

// byteBudget bounds the bytes calls in flight hold on their callers'
// behalf before the registry counts them: an upload's chunks, kept until
// its trailer comes. Each Upload reserves the size its header declares
// before it receives a byte, and gives it back when it ends, stored or
// not; a stored object's bytes are the registry's to count from then on.
// A nil budget, or one of max 0, bounds nothing. Safe for concurrent use.
type byteBudget struct {
	max  int64
	used atomic.Int64
}

// reserve takes n bytes, or fails with a *registry.LimitError for
// UPLOAD_BYTES_LIMIT if that would pass max.
func (b *byteBudget) reserve(n int64) error {
	if b == nil {
		return nil
	}
	for {
		cur := b.used.Load()
		if b.max > 0 && cur+n > b.max {
			return &registry.LimitError{Limit: LimitUploadBytes, Max: b.max, Want: cur + n}
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return nil
		}
	}
}

// release gives back n bytes reserve took.
func (b *byteBudget) release(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// inUse returns the bytes reserved now.
func (b *byteBudget) inUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}
